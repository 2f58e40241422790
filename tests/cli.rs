//! Bad flag values stop `surge` before it binds anything, with exit status
//! 2 and one line that names the flag (clap's own errors say `error:`).

use std::process::Command;
use std::time::Duration;

mod support;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_surge")).args(args),
        Duration::from_secs(20),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_values_are_refused_with_the_flag_named() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["echo", "--ipv6-prefix", "129"],
            "--ipv6-prefix must be at most 128",
        ),
        (
            &["echo", "--tarpit-slots", "0"],
            "--tarpit-slots and --max-handshakes-in-flight",
        ),
        (
            &["echo", "--max-handshakes-in-flight", "0"],
            "--max-handshakes-in-flight must be at least 1",
        ),
        (
            &["echo", "--require-subprotocol"],
            "--require-subprotocol needs at least one --subprotocol",
        ),
        (
            &["echo", "--trusted-proxy", "10.0.0.0/99"],
            "neither an address nor a CIDR block",
        ),
        (
            &["echo", "--deflate", "always"],
            "invalid value 'always' for '--deflate",
        ),
        (
            &["echo", "--hub-backpressure", "drop"],
            "invalid value 'drop' for '--hub-backpressure",
        ),
        (
            &["ticker", "--deflate-broadcast", "sometimes"],
            "invalid value 'sometimes' for '--deflate-broadcast",
        ),
        (&["ticker", "--rate", "0"], "--rate must be above 0"),
        (
            &["ticker", "--symbols", "0"],
            "--symbols must be 1 to 100000",
        ),
        (
            &["serve", "--max-message", "0"],
            "--max-message must be at least 1",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{args:?} started anyway");
    }
}

#[test]
fn an_unusable_redis_url_fails_the_start() {
    let (code, stderr) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        "mongodb://nope",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--redis-url mongodb://nope"), "{stderr}");
}
