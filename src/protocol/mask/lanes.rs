//! The unmask loop, written once over a vector register type. Each ISA file
//! supplies only splat, load, xor and store for its register.
#![allow(unsafe_code)]

use super::scalar;

/// A SIMD register of `WIDTH` bytes (a multiple of 4, so a whole register
/// never changes the key phase).
pub(super) trait Lanes: Copy {
    const WIDTH: usize;

    /// A register filled with the 4-byte `key`.
    ///
    /// # Safety
    /// The CPU must support the instruction set the register belongs to.
    unsafe fn splat(key: [u8; 4]) -> Self;

    /// Loads `WIDTH` bytes at `ptr`, XORs them with `self` and stores them back.
    ///
    /// # Safety
    /// As for `splat`, and `ptr..ptr + WIDTH` must be valid for reads and writes.
    unsafe fn xor_in_place(self, ptr: *mut u8);
}

/// Head-free unmask: whole registers, then the word-at-a-time tail.
///
/// # Safety
/// The CPU must support `L`'s instruction set; callers are `#[target_feature]`
/// functions reached only through a capability token, so that this body is
/// compiled with the feature enabled.
#[inline(always)]
pub(super) unsafe fn unmask_with<L: Lanes>(buf: &mut [u8], key: [u8; 4], phase: usize) {
    // SAFETY: forwarded from this function's contract.
    let mask = unsafe { L::splat(scalar::rotated(key, phase)) };
    let mut chunks = buf.chunks_exact_mut(L::WIDTH);
    for chunk in &mut chunks {
        // SAFETY: `chunk` is exactly WIDTH writable bytes; CPU support as above.
        unsafe { mask.xor_in_place(chunk.as_mut_ptr()) };
    }
    scalar::unmask_words(chunks.into_remainder(), key, phase);
}
