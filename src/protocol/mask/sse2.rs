//! SSE2 kernel: 16 bytes per register; every x86_64 CPU has it.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, _mm_loadu_si128, _mm_set1_epi32, _mm_storeu_si128, _mm_xor_si128,
};

use super::lanes::{unmask_with, Lanes};

/// Proof that the CPU supports SSE2.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sse2(());

impl Sse2 {
    pub(super) fn new() -> Option<Self> {
        is_x86_feature_detected!("sse2").then_some(Self(()))
    }

    pub(super) fn unmask(self, buf: &mut [u8], key: [u8; 4], phase: usize) {
        // SAFETY: `self` exists only if the CPU has SSE2.
        unsafe { unmask_sse2(buf, key, phase) }
    }
}

#[target_feature(enable = "sse2")]
unsafe fn unmask_sse2(buf: &mut [u8], key: [u8; 4], phase: usize) {
    // SAFETY: this function is compiled with, and only called with, SSE2.
    unsafe { unmask_with::<V>(buf, key, phase) }
}

#[derive(Clone, Copy)]
struct V(__m128i);

impl Lanes for V {
    const WIDTH: usize = 16;

    #[inline(always)]
    unsafe fn splat(key: [u8; 4]) -> Self {
        // SAFETY: SSE2 is guaranteed by the caller.
        Self(unsafe { _mm_set1_epi32(i32::from_ne_bytes(key)) })
    }

    #[inline(always)]
    unsafe fn xor_in_place(self, ptr: *mut u8) {
        // SAFETY: 16 valid bytes at `ptr` (unaligned access is allowed) and SSE2, by contract.
        unsafe {
            let v = _mm_loadu_si128(ptr.cast());
            _mm_storeu_si128(ptr.cast(), _mm_xor_si128(v, self.0));
        }
    }
}
