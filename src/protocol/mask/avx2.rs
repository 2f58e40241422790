//! AVX2 kernel: 32 bytes per register.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_storeu_si256, _mm256_xor_si256,
};

use super::lanes::{unmask_with, Lanes};

/// Proof that the CPU supports AVX2.
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx2(());

impl Avx2 {
    pub(super) fn new() -> Option<Self> {
        is_x86_feature_detected!("avx2").then_some(Self(()))
    }

    pub(super) fn unmask(self, buf: &mut [u8], key: [u8; 4], phase: usize) {
        // SAFETY: `self` exists only if the CPU has AVX2.
        unsafe { unmask_avx2(buf, key, phase) }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn unmask_avx2(buf: &mut [u8], key: [u8; 4], phase: usize) {
    // SAFETY: this function is compiled with, and only called with, AVX2.
    unsafe { unmask_with::<V>(buf, key, phase) }
}

#[derive(Clone, Copy)]
struct V(__m256i);

impl Lanes for V {
    const WIDTH: usize = 32;

    #[inline(always)]
    unsafe fn splat(key: [u8; 4]) -> Self {
        // SAFETY: AVX2 is guaranteed by the caller.
        Self(unsafe { _mm256_set1_epi32(i32::from_ne_bytes(key)) })
    }

    #[inline(always)]
    unsafe fn xor_in_place(self, ptr: *mut u8) {
        // SAFETY: 32 valid bytes at `ptr` (unaligned access is allowed) and AVX2, by contract.
        unsafe {
            let v = _mm256_loadu_si256(ptr.cast());
            _mm256_storeu_si256(ptr.cast(), _mm256_xor_si256(v, self.0));
        }
    }
}
