//! Unmasking of client payloads (RFC 6455 §5.3).
//!
//! One safe entry point, [`unmask`]; the fastest kernel the CPU supports is
//! chosen once.

/// XORs `buf` in place with the 4-byte masking `key`, starting at byte
/// `phase % 4` of the key (the offset of `buf[0]` within the frame payload).
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + phase) & 3];
    }
}

/// The name of the kernel [`unmask`] dispatches to.
pub fn kernel_name() -> &'static str {
    "scalar"
}
