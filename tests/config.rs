//! `--config FILE`: every kind of mistake is refused with exit status 2 and
//! a line naming the file, the line and the key; `--check-config` prints a
//! config that reproduces itself; the command line wins over the file; and
//! `[[routes]]` with per-route limits change what real clients see.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("surge-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_surge")).args(args),
        Duration::from_secs(20),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `surge serve --config FILE --check-config`.
fn check_serve(file: &std::path::Path) -> (Option<i32>, String, String) {
    run(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--check-config",
    ])
}

#[test]
fn each_kind_of_error_names_file_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("syntax.toml", "shards = 1\nmax-message = \n", ":2: "),
        (
            "unknown-key.toml",
            "shards = 1\n\n[admission]\nmax-conns-per-ipp = 3\n",
            ":4: key `admission.max-conns-per-ipp`: unknown key",
        ),
        (
            "unknown-section.toml",
            "[limits]\nmax-message = 3\n",
            ":1: key `limits`: unknown section",
        ),
        (
            "bad-number.toml",
            "\nmax_message = \"big\"\n",
            ":2: key `max_message`: invalid value 'big' for '--max-message",
        ),
        (
            "bad-enum.toml",
            "backend = \"kqueue\"\n",
            ":1: key `backend`: invalid value 'kqueue'",
        ),
        (
            "bad-range.toml",
            "shards = 0\n",
            ":1: key `shards`: --shards must be at least 1",
        ),
        (
            "list-for-one.toml",
            "max-message = [1, 2]\n",
            ":1: key `max-message`: takes one value, not a list",
        ),
        (
            "not-a-bool.toml",
            "subprotocol = [\"chat\"]\nrequire-subprotocol = \"yes\"\n",
            ":2: key `require-subprotocol`: must be true or false",
        ),
        (
            "date.toml",
            "max-message = 1979-05-27\n",
            ":1: key `max-message`: must be a string, number or boolean",
        ),
        (
            "not-a-key.toml",
            "config = \"other.toml\"\n",
            ":1: key `config`: unknown key",
        ),
        (
            "redis.toml",
            "[bridge.redis]\nurl = 5\nport = 6379\n",
            ":3: key `bridge.redis.port`: unknown key",
        ),
        (
            "tls-file.toml",
            "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
            ":2: key `tls.cert`: --tls-cert /nonexistent/cert.pem: No such file",
        ),
        (
            "tls-half.toml",
            "\n[tls]\ncert = \"/nonexistent/cert.pem\"\n",
            ":3: key `tls.cert`: --tls-cert needs --tls-key",
        ),
        (
            "route-kind.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"mirror\"\n",
            ":3: key `routes.kind`: \"mirror\" is not one of echo, hub, ticker",
        ),
        (
            "route-history.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\nhistory-size = 5\n",
            ":4: key `routes.history-size`: only a hub route keeps history",
        ),
        (
            "route-history-ttl.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"hub\"\nhistory-ttl-ms = \"soon\"\n",
            ":4: key `routes.history-ttl-ms`: invalid digit",
        ),
        (
            "route-path.toml",
            "[[routes]]\npath = \"x\"\nkind = \"echo\"\n",
            ":2: key `routes.path`: \"x\" is not a path",
        ),
        (
            "route-missing.toml",
            "[[routes]]\npath = \"/x\"\n",
            ":1: key `routes.kind`: missing",
        ),
        (
            "route-twice.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\n\n[[routes]]\npath = \"/x\"\nkind = \"hub\"\n",
            ":5: key `routes.path`: \"/x\" is routed twice",
        ),
        (
            "route-key.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\nmax-mesage = 5\n",
            ":4: key `routes.max-mesage`: unknown route key",
        ),
        (
            "route-limit.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\nmax-message = 0\n",
            ":4: key `routes.max-message`: must be at least 1",
        ),
        (
            "route-latest.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\nlatest = true\n",
            ":4: key `routes.latest`: only a hub route keeps history",
        ),
        (
            "route-latest-bool.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"hub\"\nlatest = \"yes\"\n",
            ":4: key `routes.latest`: must be true or false",
        ),
        (
            "route-recovery.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\nmax-recovery = 5\n",
            ":4: key `routes.max-recovery`: only a hub route resumes subscriptions",
        ),
        (
            "route-ping.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"echo\"\nping-interval-ms = 5\n",
            ":4: key `routes.ping-interval-ms`: only an Engine.IO route has it",
        ),
        (
            "route-ping-zero.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"engineio-echo\"\nping-timeout-ms = 0\n",
            ":4: key `routes.ping-timeout-ms`: must be at least 1",
        ),
        (
            "route-connect-timeout.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"engineio-echo\"\nconnect-timeout-ms = 5\n",
            ":4: key `routes.connect-timeout-ms`: only a Socket.IO route has it",
        ),
        (
            "route-recovery-zero.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"socketio\"\nmax-disconnection-ms = 0\n",
            ":4: key `routes.max-disconnection-ms`: must be at least 1",
        ),
        (
            "route-cors.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"engineio-echo\"\ncors-origin = \"a.example, b\"\n",
            ":4: key `routes.cors-origin`: \"a.example, b\" is neither \"*\" nor one origin",
        ),
        (
            "route-recovery-number.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"hub\"\nmax-recovery = -1\n",
            ":4: key `routes.max-recovery`: invalid digit",
        ),
        (
            "topics-not-tables.toml",
            "topics = [1]\n",
            ":1: key `topics`: must be [[topics]] tables",
        ),
        (
            "topics-prefix-missing.toml",
            "[[topics]]\nhistory-size = 5\n",
            ":1: key `topics.prefix`: missing",
        ),
        (
            "topics-prefix-empty.toml",
            "[[topics]]\nprefix = \"\"\nlatest = true\n",
            ":2: key `topics.prefix`: must not be empty",
        ),
        (
            "topics-prefix-number.toml",
            "[[topics]]\nprefix = 7\nlatest = true\n",
            ":2: key `topics.prefix`: must be a string",
        ),
        (
            "topics-twice.toml",
            "[[topics]]\nprefix = \"a.\"\nlatest = true\n\n[[topics]]\nprefix = \"a.\"\nhistory-size = 1\n",
            ":5: key `topics.prefix`: \"a.\" has a rule already",
        ),
        (
            "topics-key.toml",
            "[[topics]]\nprefix = \"a.\"\nhistory-sise = 1\n",
            ":3: key `topics.history-sise`: unknown topics key",
        ),
        (
            "topics-size.toml",
            "[[topics]]\nprefix = \"a.\"\nhistory-size = \"lots\"\n",
            ":3: key `topics.history-size`: invalid digit",
        ),
        (
            "topics-ttl.toml",
            "\n[[topics]]\nprefix = \"a.\"\nhistory-ttl-ms = 1.5\n",
            ":4: key `topics.history-ttl-ms`: invalid digit",
        ),
        (
            "topics-latest.toml",
            "[[topics]]\nprefix = \"a.\"\nlatest = 1\n",
            ":3: key `topics.latest`: must be true or false",
        ),
        (
            "topics-nothing.toml",
            "[[topics]]\nprefix = \"a.\"\n",
            ":1: key `topics`: the rule for \"a.\" sets nothing",
        ),
        (
            "route-policy.toml",
            "[[routes]]\npath = \"/x\"\nkind = \"hub\"\nbackpressure = \"drop\"\n",
            ":4: key `routes.backpressure`: \"drop\" is not one of disconnect, conflate",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_config(name, text);
        let path = path.to_str().unwrap();
        let (code, _, stderr) = run(&["echo", "--config", path, "--check-config"]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        let line = format!("surge: {path}{expected}");
        assert!(
            stderr.contains(&line),
            "{name}: want {line:?}, got {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
    }
    let (code, _, stderr) = run(&["echo", "--config", "/nonexistent/surge.toml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read config /nonexistent/surge.toml: No such file"),
        "{stderr}"
    );
    let ticker = write_config(
        "echo-ticker.toml",
        "[[routes]]\npath = \"/t\"\nkind = \"ticker\"\n",
    );
    let (code, _, stderr) = run(&["echo", "--config", ticker.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("a ticker route needs `surge serve`"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_a_config_that_reproduces_itself() {
    let file = write_config(
        "full.toml",
        "shards = 1\nmax_message = 4096\nlisten = [\"127.0.0.1:9100\", \"[::1]:9100\"]\n\
         [admission]\nmax-conns-per-ip = 7\nallow-origin = [\"https://a.example\"]\n\
         [deflate]\nthreshold = 128\n[bridge.redis]\nurl = \"redis://127.0.0.1:6390\"\n\
         [ticker]\nmax-backpressure = 1000\n\
         [[routes]]\npath = \"/chat\"\nkind = \"hub\"\nmax-message = 512\nidle-timeout-ms = 3000\n\
         backpressure = \"conflate\"\ndeflate = \"off\"\nhistory-size = 50\nhistory-ttl-ms = 60000\n\
         latest = true\nmax-recovery = 7\n\
         [[routes]]\npath = \"/feed\"\nkind = \"ticker\"\n\
         [[routes]]\npath = \"/engine.io/\"\nkind = \"engineio-echo\"\nping-interval-ms = 1000\n\
         ping-timeout-ms = 900\nmax-payload = 4096\ncors-origin = \"https://app.example\"\n\
         [[routes]]\npath = \"/socket.io/\"\nkind = \"socketio\"\nconnect-timeout-ms = 5000\n\
         max-disconnection-ms = 60000\n\
         [pubsub]\nhistory-bytes = 1048576\nmax-recovery = 20\n\
         [[topics]]\nprefix = \"scores.\"\nhistory-size = 100\nhistory-ttl-ms = 60000\nlatest = false\n\
         [[topics]]\nprefix = \"scores.live.\"\nlatest = true\n",
    );
    let (code, first, stderr) = check_serve(file.as_path());
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "shards = 1\n",
        "max-message = 4096\n",
        "listen = [\"127.0.0.1:9100\", \"[::1]:9100\"]\n",
        "max-conns-per-ip = 7\n",
        "allow-origin = [\"https://a.example\"]\n",
        "deflate-threshold = 128\n",
        "redis-url = \"redis://127.0.0.1:6390\"\n",
        "ticker-max-backpressure = 1000\n",
        "path = \"/chat\"\nkind = \"hub\"\nmax-message = 512\nidle-timeout-ms = 3000\n\
         backpressure = \"conflate\"\ndeflate = \"off\"\nhistory-size = 50\nhistory-ttl-ms = 60000\n\
         latest = true\nmax-recovery = 7\n",
        "[[topics]]\nprefix = \"scores.\"\nhistory-size = 100\nhistory-ttl-ms = 60000\n\
         latest = false\n",
        "[[topics]]\nprefix = \"scores.live.\"\nlatest = true\n",
        "latest = false\n",
        "history-bytes = 1048576\n",
        "max-recovery = 20\n",
        "history-size = 0\n",
        "path = \"/feed\"\nkind = \"ticker\"\n",
        "path = \"/engine.io/\"\nkind = \"engineio-echo\"\nping-interval-ms = 1000\n\
         ping-timeout-ms = 900\nmax-payload = 4096\ncors-origin = \"https://app.example\"\n",
        "path = \"/socket.io/\"\nkind = \"socketio\"\nconnect-timeout-ms = 5000\n\
         max-disconnection-ms = 60000\n",
        // Defaults appear too.
        "handshake-timeout-ms = 10000\n",
    ] {
        assert!(first.contains(line), "missing {line:?} in\n{first}");
    }
    let again = write_config("again.toml", &first);
    let (code, second, stderr) = check_serve(again.as_path());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(first, second);
}

#[test]
fn the_command_line_wins_over_the_file() {
    let file = write_config(
        "wins.toml",
        "max-message = 100\nsubprotocol = [\"a\"]\ndrain-ms = 5\n",
    );
    let (code, out, stderr) = run(&[
        "echo",
        "--config",
        file.to_str().unwrap(),
        "--max-message",
        "200",
        "--subprotocol",
        "b",
        "--check-config",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains("max-message = 200\n"), "{out}");
    assert!(out.contains("subprotocol = [\"b\"]\n"), "{out}");
    assert!(out.contains("drain-ms = 5\n"), "{out}");
    // A value the file got wrong does not matter once the command line
    // gives it.
    let bad = write_config("overridden.toml", "shards = \"many\"\n");
    let (code, _, stderr) = run(&[
        "echo",
        "--config",
        bad.to_str().unwrap(),
        "--shards",
        "1",
        "--check-config",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_embedded_default_serves_echo_hub_ticker_and_engineio() {
    let (code, out, stderr) = run(&["serve", "--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    for route in [
        "/echo\"\nkind = \"echo\"",
        "/hub\"\nkind = \"hub\"",
        "/ticker\"\nkind = \"ticker\"",
        "/engine.io/\"\nkind = \"engineio-echo\"",
    ] {
        assert!(out.contains(route), "{out}");
    }
    assert_eq!(
        out.lines().next(),
        Some("# effective configuration"),
        "{out}"
    );
}

fn upgrade(server: &Server, path: &str, extra: &str) -> (u16, String, std::net::TcpStream) {
    let mut s = connect(server.addr);
    s.write_all(upgrade_request(path, extra).as_bytes())
        .unwrap();
    let (status, head) = read_response_head(&mut s);
    (status, head, s)
}

#[test]
fn routes_and_their_limits_apply() {
    let file = write_config(
        "routes.toml",
        "max-message = 100000\nidle-timeout-ms = 60000\n\
         [[routes]]\npath = \"/small\"\nkind = \"echo\"\nmax-message = 64\nidle-timeout-ms = 400\n\
         deflate = \"off\"\n\
         [[routes]]\npath = \"/big\"\nkind = \"echo\"\n\
         [[routes]]\npath = \"/rooms\"\nkind = \"hub\"\n\
         [[routes]]\npath = \"/feed\"\nkind = \"ticker\"\n",
    );
    let server = Server::start(&["serve", "--config", file.to_str().unwrap(), "--rate", "50"]);
    let deflate = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

    // Paths of the default config are gone; the file's are there.
    for path in ["/echo", "/hub", "/ticker", "/"] {
        let (status, head, _) = upgrade(&server, path, "");
        assert_eq!(status, 404, "{path}: {head}");
    }

    // Per-route message limit and deflate policy.
    let (status, head, mut small) = upgrade(&server, "/small", deflate);
    assert_eq!(status, 101, "{head}");
    assert!(!head.contains("permessage-deflate"), "{head}");
    let (status, head, mut big) = upgrade(&server, "/big", deflate);
    assert_eq!(status, 101, "{head}");
    assert!(head.contains("permessage-deflate"), "{head}");
    big.write_all(&binary(&[7u8; 1000])).unwrap();
    let (first, payload) = read_frame(&mut big);
    // Compressed (RSV1) on the route that negotiated it.
    assert_eq!(first, 0xC2);
    assert!(payload.len() < 100, "{}", payload.len());
    small.write_all(&binary(&[7u8; 60])).unwrap();
    assert_eq!(read_frame(&mut small), (0x82, vec![7u8; 60]));
    small.write_all(&binary(&[7u8; 65])).unwrap();
    assert_eq!(read_close(&mut small), Some(1009));

    // Per-route idle timeout: /small closes a silent client with 1001,
    // /big keeps its own.
    let (_, _, mut idle) = upgrade(&server, "/small", "");
    let started = Instant::now();
    assert_eq!(read_close(&mut idle), Some(1001));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Below the deflate threshold the echo comes back as it went.
    big.write_all(&binary(b"still here")).unwrap();
    assert_eq!(read_frame(&mut big), (0x82, b"still here".to_vec()));

    // The hub and the feed answer on their configured paths.
    let (status, _, mut hub) = upgrade(&server, "/rooms", "");
    assert_eq!(status, 101);
    hub.write_all(&text(br#"{"op":"subscribe","topics":["a"]}"#))
        .unwrap();
    let (_, ack) = read_frame(&mut hub);
    assert!(String::from_utf8_lossy(&ack).contains("subscribed"));
    let (status, _, mut feed) = upgrade(&server, "/feed/MSFT", "");
    assert_eq!(status, 101);
    let (first, tick) = read_frame(&mut feed);
    assert_eq!(first, 0x81);
    assert!(
        tick.starts_with(b"MSFT "),
        "{}",
        String::from_utf8_lossy(&tick)
    );
    let (status, _, _) = upgrade(&server, "/feed/NOPE", "");
    assert_eq!(status, 404);
}

#[test]
fn the_binary_refuses_app_routes() {
    let file = write_config(
        "app.toml",
        "[[routes]]\npath = \"/chat\"\nkind = \"app\"\nhandler = \"chat\"\n",
    );
    let (code, _, stderr) = run(&["serve", "--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("route \"/chat\" names handler \"chat\": only a program embedding surge"),
        "{stderr}"
    );
    let misplaced = write_config(
        "handler.toml",
        "[[routes]]\npath = \"/chat\"\nkind = \"hub\"\nhandler = \"chat\"\n",
    );
    let (code, _, stderr) = run(&["serve", "--config", misplaced.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(":1: key `routes.handler`: only an app or socketio route has one"),
        "{stderr}"
    );
}

#[test]
fn message_limits_are_keys_and_check_config_shows_them() {
    let (code, out, stderr) = run(&["echo", "--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "message-budget = 67108864\n",
        "message-timeout-ms = 10000\n",
        "hub-max-message = 65536\n",
    ] {
        assert!(out.contains(line), "missing default {line:?} in\n{out}");
    }
    let file = write_config(
        "messages.toml",
        "message-budget = 1048576\nmessage-timeout-ms = 2500\n[pubsub]\nhub-max-message = 1024\n",
    );
    let (code, out, stderr) = run(&["echo", "--config", file.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "message-budget = 1048576\n",
        "message-timeout-ms = 2500\n",
        "hub-max-message = 1024\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    let (code, _, stderr) = run(&["echo", "--hub-max-message", "0", "--check-config"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--hub-max-message must be at least 1"),
        "{stderr}"
    );
}

/// The token, per-user, publish-rate and lifetime settings are keys like
/// every flag: a file sets them, `--check-config` shows them, and a
/// per-user cap without a key to know users by is refused.
#[test]
fn token_limits_and_lifetime_are_keys_and_check_config_shows_them() {
    let secret = write_config("jwt.secret", &"k".repeat(40));
    let file = write_config(
        "tokens.toml",
        &format!(
            "max-lifetime-ms = 3600000\n[admission]\njwt-hs256-secret = {:?}\n\
             max-conns-per-user = 3\njwt-default-topics = [\"news.*\"]\n\
             [pubsub]\npublish-rate = 10\npublish-burst = 20\n",
            secret.to_str().unwrap()
        ),
    );
    let (code, out, stderr) = check_serve(file.as_path());
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "max-lifetime-ms = 3600000\n".to_owned(),
        format!("jwt-hs256-secret = {:?}\n", secret.to_str().unwrap()),
        "max-conns-per-user = 3\n".to_owned(),
        "jwt-default-topics = [\"news.*\"]\n".to_owned(),
        "publish-rate = 10\n".to_owned(),
        "publish-burst = 20\n".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in\n{out}");
    }
    let file = write_config("per-user.toml", "[admission]\nmax-conns-per-user = 3\n");
    let (code, _, stderr) = check_serve(file.as_path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-conns-per-user needs a key"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["serve", "--jwt-first-message-s", "5", "--check-config"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--jwt-first-message-s needs a key"),
        "{stderr}"
    );
    let short = write_config("short.secret", "too short");
    let (code, _, stderr) = run(&[
        "serve",
        "--jwt-hs256-secret",
        short.to_str().unwrap(),
        "--check-config",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("at least 32 are needed"), "{stderr}");
}
