#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| surge::fuzzing::jwt_token(data));
