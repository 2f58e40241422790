//! Unmasking of client payloads (RFC 6455 §5.3).
//!
//! One safe entry point, [`unmask`]. The fastest kernel this CPU supports
//! is chosen once, on first use, and reported by [`kernel_name`]. Each
//! SIMD kernel lives in its own file behind a token type that can only be
//! constructed when the CPU has the feature, so calling it is safe; the
//! loop itself is written once, in `lanes.rs`, over a small lane trait.

mod lanes;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod sse2;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

/// A kernel: XOR `buf` with `key`, starting at key byte `phase % 4`.
pub type Kernel = fn(&mut [u8], [u8; 4], usize);

/// Below this length the bytewise loop beats any setup: most control
/// frames and tiny chat messages never reach a vector register.
const SHORT: usize = 16;

static CHOSEN: OnceLock<(&'static str, Kernel)> = OnceLock::new();

/// XORs `buf` in place with the 4-byte masking `key`, starting at byte
/// `phase % 4` of the key (the offset of `buf[0]` within the frame payload).
#[inline]
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    if buf.len() < SHORT {
        scalar::unmask_bytewise(buf, key, phase);
        return;
    }
    let (_, kernel) = CHOSEN.get_or_init(fastest);
    kernel(buf, key, phase);
}

/// The name of the kernel [`unmask`] dispatches to.
pub fn kernel_name() -> &'static str {
    CHOSEN.get_or_init(fastest).0
}

/// Every kernel this CPU can run, fastest (as measured) first; the last is the scalar
/// word-at-a-time reference. Tests and benches call each one directly.
#[doc(hidden)]
pub fn available_kernels() -> Vec<(&'static str, Kernel)> {
    let mut kernels: Vec<(&'static str, Kernel)> = Vec::new();
    // AVX2 before AVX-512: on the Xeon this was measured on, AVX2 unmasked
    // 1 KiB at 84 GiB/s against AVX-512's 67 (64 KiB: both ~57, the cache
    // bound); wider registers did not pay for their frequency cost.
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::Avx2::new().is_some() {
            kernels.push(("avx2", |b, k, p| {
                avx2::Avx2::new().expect("checked").unmask(b, k, p)
            }));
        }
        if avx512::Avx512::new().is_some() {
            kernels.push(("avx512", |b, k, p| {
                avx512::Avx512::new().expect("checked").unmask(b, k, p)
            }));
        }
        if sse2::Sse2::new().is_some() {
            kernels.push(("sse2", |b, k, p| {
                sse2::Sse2::new().expect("checked").unmask(b, k, p)
            }));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if neon::Neon::new().is_some() {
            kernels.push(("neon", |b, k, p| {
                neon::Neon::new().expect("checked").unmask(b, k, p)
            }));
        }
    }
    kernels.push(("scalar", scalar::unmask_words));
    kernels
}

/// The bytewise reference every kernel is held to.
#[doc(hidden)]
pub fn unmask_reference(buf: &mut [u8], key: [u8; 4], phase: usize) {
    scalar::unmask_bytewise(buf, key, phase);
}

fn fastest() -> (&'static str, Kernel) {
    let choice = available_kernels()[0];
    tracing::debug!(kernel = choice.0, "unmask kernel chosen");
    choice
}
