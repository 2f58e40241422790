//! The portable kernels: the bytewise reference and a word-at-a-time loop
//! that every other kernel falls back to for its tail.

/// The reference: one byte at a time, straight from RFC 6455 §5.3.
pub(super) fn unmask_bytewise(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + phase) & 3];
    }
}

/// The key rotated so that byte 0 lines up with `phase`.
pub(super) fn rotated(key: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase & 3;
    [key[p], key[(p + 1) & 3], key[(p + 2) & 3], key[(p + 3) & 3]]
}

/// Eight bytes at a time with the rotated key doubled into a u64; unaligned
/// u64 loads are as fast as aligned ones on every target we run on.
pub(super) fn unmask_words(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let k = rotated(key, phase);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // Whole words keep the phase, so the tail starts where `phase` said.
    unmask_bytewise(chunks.into_remainder(), key, phase);
}
