#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| surge::fuzzing::socketio_session(data));
