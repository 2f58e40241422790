//! AVX-512 kernel: 64 bytes per register (AVX-512F).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512i, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_storeu_si512, _mm512_xor_si512,
};

use super::lanes::{unmask_with, Lanes};

/// Proof that the CPU supports AVX-512F.
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx512(());

impl Avx512 {
    pub(super) fn new() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Self(()))
    }

    pub(super) fn unmask(self, buf: &mut [u8], key: [u8; 4], phase: usize) {
        // SAFETY: `self` exists only if the CPU has AVX-512F.
        unsafe { unmask_avx512(buf, key, phase) }
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn unmask_avx512(buf: &mut [u8], key: [u8; 4], phase: usize) {
    // SAFETY: this function is compiled with, and only called with, AVX-512F.
    unsafe { unmask_with::<V>(buf, key, phase) }
}

#[derive(Clone, Copy)]
struct V(__m512i);

impl Lanes for V {
    const WIDTH: usize = 64;

    #[inline(always)]
    unsafe fn splat(key: [u8; 4]) -> Self {
        // SAFETY: AVX-512F is guaranteed by the caller.
        Self(unsafe { _mm512_set1_epi32(i32::from_ne_bytes(key)) })
    }

    #[inline(always)]
    unsafe fn xor_in_place(self, ptr: *mut u8) {
        // SAFETY: 64 valid bytes at `ptr` (unaligned access is allowed) and AVX-512F, by contract.
        unsafe {
            let v = _mm512_loadu_si512(ptr.cast());
            _mm512_storeu_si512(ptr.cast(), _mm512_xor_si512(v, self.0));
        }
    }
}
