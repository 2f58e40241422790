//! Replays every committed fuzz seed and regression through the same
//! functions the cargo-fuzz targets call, so CI checks the corpus on stable
//! Rust without libFuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let dir = root.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_ne!(
                dir.file_name().unwrap(),
                "seeds",
                "missing {}",
                dir.display()
            );
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{} fails", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no seeds for {target}");
    println!("{target}: {count} inputs replayed");
}

#[test]
fn handshake_corpus() {
    replay("handshake", surge::fuzzing::handshake);
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", surge::fuzzing::frame_decoder);
}

#[test]
fn utf8_stream_corpus() {
    replay("utf8_stream_diff", surge::fuzzing::utf8_stream);
}

#[test]
fn unmask_corpus() {
    replay("unmask_diff", surge::fuzzing::unmask_pieces);
}

#[test]
fn proxy_protocol_corpus() {
    replay("proxy_protocol", surge::fuzzing::proxy_protocol);
}

#[test]
fn frame_decoder_limits_corpus() {
    replay("frame_decoder_limits", surge::fuzzing::frame_decoder_limits);
}

#[test]
fn hub_request_corpus() {
    replay("hub_request", surge::fuzzing::hub_request);
}

#[test]
fn event_stream_corpus() {
    replay("event_stream", surge::fuzzing::event_stream);
}

#[test]
fn engineio_packet_corpus() {
    replay("engineio_packet", surge::fuzzing::engineio_packet);
}

#[test]
fn engineio_payload_corpus() {
    replay("engineio_payload", surge::fuzzing::engineio_payload);
}

#[test]
fn socketio_packet_corpus() {
    replay("socketio_packet", surge::fuzzing::socketio_packet);
}

#[test]
fn socketio_session_corpus() {
    replay("socketio_session", surge::fuzzing::socketio_session);
}

#[test]
fn jwt_token_corpus() {
    replay("jwt_token", surge::fuzzing::jwt_token);
}

#[test]
fn api_request_corpus() {
    replay("api_request", surge::fuzzing::api_request);
}
