//! Every kernel this CPU can run, held to the bytewise reference: seed
//! lengths around every register width, and proptest over length,
//! alignment and phase.

use proptest::prelude::*;

use super::{available_kernels, unmask, unmask_reference};

const SEED_LENGTHS: &[usize] = &[
    0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 4095,
    4096, 65536,
];
const KEYS: [[u8; 4]; 3] = [
    [0x37, 0xFA, 0x21, 0x3D],
    [0, 0, 0, 0],
    [0xFF, 0x01, 0x80, 0x7F],
];

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Runs `kernel` on `len` bytes at `offset` into a larger buffer and checks
/// it against the reference, including that bytes outside are untouched.
fn check(name: &str, kernel: super::Kernel, len: usize, offset: usize, key: [u8; 4], phase: usize) {
    let base = pattern(len + offset + 64);
    let mut want = base.clone();
    unmask_reference(&mut want[offset..offset + len], key, phase);
    let mut got = base;
    kernel(&mut got[offset..offset + len], key, phase);
    assert_eq!(
        got, want,
        "{name}: len {len} offset {offset} phase {phase} key {key:02x?}"
    );
}

#[test]
fn seeds_match_the_reference() {
    let kernels = available_kernels();
    assert!(kernels.iter().any(|k| k.0 == "scalar"));
    for &(name, kernel) in &kernels {
        for &len in SEED_LENGTHS {
            for phase in 0..4 {
                for offset in [0, 1, 3, 7, 13, 31, 63] {
                    for key in KEYS {
                        check(name, kernel, len, offset, key, phase);
                    }
                }
            }
        }
    }
}

#[test]
fn masking_twice_restores_the_payload() {
    let mut buf = pattern(1000);
    unmask(&mut buf, KEYS[0], 1);
    assert_ne!(buf, pattern(1000));
    unmask(&mut buf, KEYS[0], 1);
    assert_eq!(buf, pattern(1000));
}

#[test]
fn chosen_kernel_is_the_first_available() {
    assert_eq!(super::kernel_name(), available_kernels()[0].0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_kernel_matches_the_reference(len in 0usize..4096, offset in 0usize..64, phase in 0usize..4, key: [u8; 4]) {
        for (name, kernel) in available_kernels() {
            check(name, kernel, len, offset, key, phase);
        }
    }

    #[test]
    fn split_with_carried_phase_equals_one_shot(len in 0usize..4096, cut in 0usize..4096, phase in 0usize..4, key: [u8; 4]) {
        let cut = cut.min(len);
        let mut whole = pattern(len);
        unmask(&mut whole, key, phase);
        let mut split = pattern(len);
        let (a, b) = split.split_at_mut(cut);
        unmask(a, key, phase);
        unmask(b, key, phase + cut);
        prop_assert_eq!(split, whole);
    }
}
