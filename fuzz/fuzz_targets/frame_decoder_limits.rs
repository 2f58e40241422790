#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| surge::fuzzing::frame_decoder_limits(data));
