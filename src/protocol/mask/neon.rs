//! NEON kernel: 16 bytes per register; every aarch64 CPU has it.
#![allow(unsafe_code)]

use std::arch::aarch64::{
    uint8x16_t, vdupq_n_u32, veorq_u8, vld1q_u8, vreinterpretq_u8_u32, vst1q_u8,
};

use super::lanes::{unmask_with, Lanes};

/// Proof that the CPU supports NEON.
#[derive(Debug, Clone, Copy)]
pub(super) struct Neon(());

impl Neon {
    pub(super) fn new() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Self(()))
    }

    pub(super) fn unmask(self, buf: &mut [u8], key: [u8; 4], phase: usize) {
        // SAFETY: `self` exists only if the CPU has NEON.
        unsafe { unmask_neon(buf, key, phase) }
    }
}

#[target_feature(enable = "neon")]
unsafe fn unmask_neon(buf: &mut [u8], key: [u8; 4], phase: usize) {
    // SAFETY: this function is compiled with, and only called with, NEON.
    unsafe { unmask_with::<V>(buf, key, phase) }
}

#[derive(Clone, Copy)]
struct V(uint8x16_t);

impl Lanes for V {
    const WIDTH: usize = 16;

    #[inline(always)]
    unsafe fn splat(key: [u8; 4]) -> Self {
        // SAFETY: NEON is guaranteed by the caller.
        Self(unsafe { vreinterpretq_u8_u32(vdupq_n_u32(u32::from_ne_bytes(key))) })
    }

    #[inline(always)]
    unsafe fn xor_in_place(self, ptr: *mut u8) {
        // SAFETY: 16 valid bytes at `ptr` (NEON loads need no alignment) and NEON, by contract.
        unsafe {
            let v = vld1q_u8(ptr);
            vst1q_u8(ptr, veorq_u8(v, self.0));
        }
    }
}
