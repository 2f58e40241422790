#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| surge::fuzzing::api_request(data));
