//! `surge::auth` against tokens signed by another implementation: Python's
//! `cryptography` makes the keys (RSA 2048, EC P-256, an HS256 secret) and
//! PyJWT signs (tests/py/jwt_tokens.py), so a shared misreading of the
//! JOSE specs cannot make both sides agree.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use surge::auth::{allows, Claims, Keys, Refused, TopicPattern};

/// The `now` every token is timed against.
const NOW: u64 = 1_800_000_000;

/// The key files and tokens, made once per test run.
struct Fixture {
    dir: PathBuf,
    tokens: HashMap<String, String>,
}

/// Keys and tokens from jwt_tokens.py in `CARGO_TARGET_TMPDIR/name`, timed
/// against `now`.
fn make_fixture(name: &str, now: u64) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let python = support::venv().join("bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/jwt_tokens.py");
    let out = support::output_within(
        Command::new(python)
            .arg(script)
            .arg(&dir)
            .arg(now.to_string()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "jwt_tokens.py failed (is PyJWT[crypto] in the venv? run scripts/test.sh): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens = std::fs::read(dir.join("tokens.json")).unwrap();
    let tokens = serde_json::from_slice(&tokens).unwrap();
    Fixture { dir, tokens }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| make_fixture("jwt", NOW))
}

fn token(name: &str) -> &'static str {
    fixture()
        .tokens
        .get(name)
        .unwrap_or_else(|| panic!("jwt_tokens.py made no {name:?} token"))
}

fn file(name: &str) -> PathBuf {
    fixture().dir.join(name)
}

fn hs() -> Keys {
    Keys::hs256_secret_file(file("hs.secret")).unwrap()
}

fn rsa() -> Keys {
    Keys::public_key_file(file("rsa.pem")).unwrap()
}

fn ec() -> Keys {
    Keys::public_key_file(file("ec.pem")).unwrap()
}

fn jwks() -> Keys {
    Keys::jwks_file(file("jwks.json")).unwrap()
}

fn patterns(list: &[&str]) -> Option<Vec<TopicPattern>> {
    Some(
        list.iter()
            .map(|p| TopicPattern::parse(p).unwrap())
            .collect(),
    )
}

#[test]
fn hs256_is_accepted_with_its_claims() {
    let claims = hs().verify(token("hs_valid"), NOW).unwrap();
    assert_eq!(
        claims,
        Claims {
            sub: "alice".to_owned(),
            exp: Some(NOW + 600),
            subscribe: patterns(&["chat", "news.*"]),
            publish: patterns(&["chat"]),
        }
    );
    let subscribe = claims.subscribe.unwrap();
    assert!(allows(&subscribe, "news.eu"));
    assert!(!allows(&subscribe, "news"));
    assert!(!allows(&claims.publish.unwrap(), "news.eu"));
}

#[test]
fn rs256_is_accepted_from_spki_and_pkcs1_pems() {
    let pkcs1 = Keys::public_key_file(file("rsa_pkcs1.pem")).unwrap();
    for keys in [rsa(), pkcs1] {
        let claims = keys.verify(token("rs_valid"), NOW).unwrap();
        assert_eq!(claims.sub, "bob", "{keys:?}");
        assert_eq!(claims.subscribe, patterns(&["a.*"]));
        assert_eq!(claims.publish, None);
    }
    assert!(format!("{:?}", rsa()).starts_with("[RS256] from public key file"));
}

#[test]
fn es256_is_accepted() {
    let keys = ec();
    assert!(format!("{keys:?}").starts_with("[ES256]"), "{keys:?}");
    let claims = keys.verify(token("es_valid"), NOW).unwrap();
    assert_eq!(claims.sub, "carol");
    assert_eq!(claims.exp, Some(NOW + 600));
    assert_eq!((claims.subscribe, claims.publish), (None, patterns(&["x"])));
}

#[test]
fn expired_tokens_are_refused_from_their_exp_second() {
    assert_eq!(hs().verify(token("expired"), NOW), Err(Refused::Expired));
    assert_eq!(
        rsa().verify(token("rs_expired"), NOW),
        Err(Refused::Expired)
    );
    assert_eq!(
        hs().verify(token("expires_now"), NOW),
        Err(Refused::Expired)
    );
    assert!(hs().verify(token("expires_now"), NOW - 1).is_ok());
    // The valid ones expire too, at NOW + 600.
    assert_eq!(
        hs().verify(token("hs_valid"), NOW + 600),
        Err(Refused::Expired)
    );
    assert!(hs().verify(token("hs_valid"), NOW + 599).is_ok());
}

#[test]
fn tokens_before_their_nbf_are_refused() {
    assert_eq!(
        hs().verify(token("not_yet_valid"), NOW),
        Err(Refused::NotYetValid)
    );
    assert_eq!(
        hs().verify(token("not_yet_valid"), NOW + 59),
        Err(Refused::NotYetValid)
    );
    assert!(hs().verify(token("not_yet_valid"), NOW + 60).is_ok());
    assert_eq!(
        hs().verify(token("hs_valid"), NOW - 11),
        Err(Refused::NotYetValid)
    );
}

#[test]
fn another_key_is_a_bad_signature() {
    assert_eq!(
        hs().verify(token("hs_wrong_key"), NOW),
        Err(Refused::BadSignature)
    );
    assert_eq!(
        rsa().verify(token("rs_wrong_key"), NOW),
        Err(Refused::BadSignature)
    );
    assert_eq!(
        ec().verify(token("es_wrong_key"), NOW),
        Err(Refused::BadSignature)
    );
}

#[test]
fn alg_none_is_refused_by_every_key() {
    for keys in [hs(), rsa(), ec(), jwks()] {
        let refused = keys.verify(token("none"), NOW);
        // A JWKS of two keys refuses it earlier, for lacking a kid.
        assert!(
            matches!(refused, Err(Refused::Algorithm | Refused::UnknownKey)),
            "{keys:?}: {refused:?}"
        );
    }
    assert_eq!(hs().verify(token("none"), NOW), Err(Refused::Algorithm));
}

#[test]
fn an_rsa_public_key_is_never_an_hmac_secret() {
    assert_eq!(
        rsa().verify(token("confusion"), NOW),
        Err(Refused::Algorithm)
    );
    // Nor is an RS or ES token good for a key of another algorithm.
    assert_eq!(
        rsa().verify(token("es_for_rsa"), NOW),
        Err(Refused::Algorithm)
    );
    assert_eq!(ec().verify(token("rs_valid"), NOW), Err(Refused::Algorithm));
    assert_eq!(hs().verify(token("rs_valid"), NOW), Err(Refused::Algorithm));
}

#[test]
fn sub_is_required() {
    assert_eq!(
        rsa().verify(token("rs_missing_sub"), NOW),
        Err(Refused::MissingClaim("sub"))
    );
}

#[test]
fn a_star_outside_a_prefix_refuses_the_token() {
    assert_eq!(
        hs().verify(token("hs_bad_pattern"), NOW),
        Err(Refused::Malformed)
    );
}

#[test]
fn a_jwks_picks_the_key_by_kid() {
    let keys = jwks();
    assert_eq!(keys.verify(token("jwks_rsa"), NOW).unwrap().sub, "dave");
    assert_eq!(keys.verify(token("jwks_ec"), NOW).unwrap().sub, "erin");
    assert_eq!(
        keys.verify(token("jwks_unknown_kid"), NOW),
        Err(Refused::UnknownKey)
    );
    assert_eq!(
        keys.verify(token("jwks_no_kid"), NOW),
        Err(Refused::UnknownKey)
    );
    assert_eq!(
        keys.verify(token("jwks_kid_of_other_key"), NOW),
        Err(Refused::Algorithm)
    );
    assert_eq!(
        keys.verify(token("jwks_wrong_key"), NOW),
        Err(Refused::BadSignature)
    );
}

#[test]
fn key_files_of_the_wrong_kind_are_errors_naming_the_file() {
    let e = Keys::public_key_file(file("hs.secret")).unwrap_err();
    assert!(e.contains("hs.secret") && e.contains("no PEM block"), "{e}");
    let e = Keys::jwks_file(file("rsa.pem")).unwrap_err();
    assert!(e.contains("rsa.pem") && e.contains("not a JWKS"), "{e}");
    // A PEM is long enough to be a secret, which is why the secret file's
    // key can only ever verify HS256.
    assert!(Keys::hs256_secret_file(file("rsa.pem")).is_ok());
    let e = Keys::hs256_secret_file(file("missing")).unwrap_err();
    assert!(
        e.starts_with("HS256 secret file ") && e.contains("missing"),
        "{e}"
    );
}

/// Keys and tokens timed against the real clock, for a running server.
fn live() -> &'static Fixture {
    static LIVE: OnceLock<Fixture> = OnceLock::new();
    LIVE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        make_fixture("jwt-live", now)
    })
}

/// Keys and tokens of a test's own, timed against the real clock now.
fn fresh(name: &str) -> Fixture {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    make_fixture(name, now)
}

fn live_token(name: &str) -> &'static str {
    &live().tokens[name]
}

fn live_file(name: &str) -> String {
    live().dir.join(name).to_str().unwrap().to_owned()
}

/// The status an upgrade of `target` with `extra` header lines gets.
fn upgrade_status(addr: std::net::SocketAddr, target: &str, extra: &str) -> u16 {
    use std::io::Write;
    let mut s = support::connect(addr);
    s.write_all(support::upgrade_request(target, extra).as_bytes())
        .unwrap();
    support::read_response_head(&mut s).0
}

fn hub(addr: std::net::SocketAddr, token: &str) -> support::hub::HubWs {
    let url = format!("ws://{addr}/hub?token={token}");
    let stream = support::connect(addr);
    let (ws, _) = tungstenite::client(url.as_str(), support::Patient(stream)).expect("upgrade");
    ws
}

fn rejected(addr: std::net::SocketAddr, reason: &str) -> u64 {
    support::metric(
        addr,
        &format!("surge_admission_rejected_total{{reason=\"{reason}\"}}"),
    )
}

/// A server with `--jwt-hs256-secret`: only a valid token upgrades (from
/// the query or `Authorization: Bearer`), every refusal is 401 and counted
/// by why; the token's `subscribe` and `publish` patterns decide what the
/// hub connection may do, a refused request gets the hub's error answer
/// and the connection stays open; an event stream for a topic the token
/// does not allow is 403.
#[test]
fn a_server_requiring_tokens_admits_and_limits_by_their_claims() {
    let secret = live_file("hs.secret");
    let server = support::Server::start(&["serve", "--jwt-hs256-secret", &secret]);
    let addr = server.addr;
    for (token, reason) in [
        ("expired", "jwt_expired"),
        ("not_yet_valid", "jwt_not_yet_valid"),
        ("hs_wrong_key", "jwt_bad_signature"),
        ("none", "jwt_algorithm"),
        ("rs_valid", "jwt_algorithm"),
        ("hs_bad_pattern", "jwt_malformed"),
    ] {
        let target = format!("/hub?token={}", live_token(token));
        let before = rejected(addr, reason);
        assert_eq!(upgrade_status(addr, &target, ""), 401, "{token}");
        assert_eq!(
            rejected(addr, reason),
            before + 1,
            "{token} counted as {reason}"
        );
    }
    assert_eq!(upgrade_status(addr, "/hub", ""), 401);
    assert_eq!(rejected(addr, "jwt_missing"), 1);
    let bearer = format!("Authorization: Bearer {}\r\n", live_token("hs_valid"));
    assert_eq!(upgrade_status(addr, "/hub", &bearer), 101);

    // alice: subscribe ["chat", "news.*"], publish ["chat"].
    let mut alice = hub(addr, live_token("hs_valid"));
    let ask = |ws: &mut support::hub::HubWs, text: &str| {
        support::hub::send_text(ws, text);
        support::hub::next_text(ws)
    };
    let denied = ask(
        &mut alice,
        r#"{"op":"subscribe","topics":["chat","secret"]}"#,
    );
    assert!(denied.contains("may not subscribe to secret"), "{denied}");
    let ok = ask(
        &mut alice,
        r#"{"op":"subscribe","topics":["chat","news.eu"]}"#,
    );
    assert!(ok.contains("\"subscribed\""), "{ok}");
    let denied = ask(&mut alice, r#"{"op":"publish","topic":"news.eu","data":1}"#);
    assert!(denied.contains("may not publish to news.eu"), "{denied}");
    let echoed = ask(&mut alice, r#"{"op":"publish","topic":"chat","data":"hi"}"#);
    assert!(
        echoed.contains("\"hi\"") && echoed.contains("chat"),
        "{echoed}"
    );

    let events = |topics: &str| {
        use std::io::Write;
        let mut s = support::connect(addr);
        let target = format!(
            "/hub/events?topics={topics}&token={}",
            live_token("hs_valid")
        );
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
        s.write_all(request.as_bytes()).unwrap();
        support::read_response_head(&mut s).0
    };
    assert_eq!(events("secret"), 403);
    assert_eq!(rejected(addr, "jwt_topic"), 1);
    assert_eq!(events("news.eu"), 200);
}

/// A public key pins RS256: RSA-signed tokens pass, an HS256 token signed
/// with the key's own bytes (the confusion attack) does not.
#[test]
fn a_public_key_pins_its_algorithm_at_the_upgrade() {
    let key = live_file("rsa.pem");
    let server = support::Server::start(&["serve", "--jwt-public-key", &key]);
    let status = |token: &str| {
        upgrade_status(
            server.addr,
            &format!("/hub?token={}", live_token(token)),
            "",
        )
    };
    assert_eq!(status("rs_valid"), 101);
    assert_eq!(status("confusion"), 401);
    assert_eq!(status("rs_expired"), 401);
    assert_eq!(status("rs_missing_sub"), 401);
    assert_eq!(rejected(server.addr, "jwt_algorithm"), 1);
    assert_eq!(rejected(server.addr, "jwt_missing_claim"), 1);
}

/// The `--jwt-*` flags: one key source, files read at start, errors that
/// name the flag or the file.
#[test]
fn jwt_flags_are_checked_at_start() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_surge"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let secret = live_file("hs.secret");
    let jwks = live_file("jwks.json");
    let (code, stderr) = run(&[
        "serve",
        "--jwt-hs256-secret",
        &secret,
        "--jwt-jwks",
        &jwks,
        "--check-config",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--jwt-hs256-secret and --jwt-jwks are exclusive"),
        "{stderr}"
    );
    let (code, stderr) = run(&[
        "serve",
        "--jwt-public-key",
        "/nonexistent/key.pem",
        "--check-config",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");
    let (code, stderr) = run(&["serve", "--jwt-default-topics", "news.*", "--check-config"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--jwt-default-topics needs a key"),
        "{stderr}"
    );
    let (code, stderr) = run(&["serve", "--jwt-hs256-secret", &secret, "--check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
}

/// A token's `exp` closes its hub connection with 4001 unless a `refresh`
/// for the same `sub` came first; a refresh for another `sub` is refused
/// and changes nothing.
#[test]
fn expiry_closes_a_connection_unless_it_refreshes() {
    // Its own tokens, timed now: the shared ones may be older than the
    // short token's 2 s.
    let fixture = fresh("jwt-expiry");
    let secret = fixture.dir.join("hs.secret");
    let secret = secret.to_str().unwrap();
    let server = support::Server::start(&["serve", "--jwt-hs256-secret", secret]);
    let token = |name: &str| fixture.tokens[name].as_str();
    let addr = server.addr;
    let started = std::time::Instant::now();
    let mut stays = hub(addr, token("hs_short"));
    let mut expires = hub(addr, token("hs_short"));
    let mut stream = {
        use std::io::Write;
        let mut s = support::connect(addr);
        let request = format!(
            "GET /hub/events?topics=chat&token={} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
            token("hs_short")
        );
        s.write_all(request.as_bytes()).unwrap();
        assert_eq!(support::read_response_head(&mut s).0, 200);
        s
    };
    let ask = |ws: &mut support::hub::HubWs, text: &str| {
        support::hub::send_text(ws, text);
        support::hub::next_text(ws)
    };
    let other = ask(
        &mut stays,
        &format!(r#"{{"op":"refresh","token":"{}"}}"#, token("hs_bob")),
    );
    assert!(other.contains("another sub"), "{other}");
    let bad = ask(&mut stays, r#"{"op":"refresh","token":"nonsense"}"#);
    assert!(bad.contains("refresh refused: malformed token"), "{bad}");
    let refreshed = ask(
        &mut stays,
        &format!(r#"{{"op":"refresh","token":"{}"}}"#, token("hs_valid")),
    );
    assert!(refreshed.contains("\"refreshed\""), "{refreshed}");
    // The other connection is closed at its token's exp (2 s after it was
    // signed), with the documented code.
    let (code, reason) = support::hub::close_frame(&mut expires);
    assert_eq!(code, 4001);
    assert_eq!(reason, "token expired");
    assert!(started.elapsed() < Duration::from_secs(10));
    // An event stream of the same token ends then too.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut rest).expect("the stream ends");
    assert!(started.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let ok = ask(&mut stays, r#"{"op":"subscribe","topics":["chat"]}"#);
    assert!(
        ok.contains("\"subscribed\""),
        "the refreshed connection was closed: {ok}"
    );
}

/// A JWKS file is read again on SIGHUP: a key added there verifies from
/// then on and a key removed no longer does; a file that no longer reads
/// keeps the keys in use, and says so.
#[test]
fn a_jwks_rotates_on_sighup() {
    let dir = live().dir.join("rotation");
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::copy(live_file("jwks.json"), &jwks).unwrap();
    let server = support::Server::start(&["serve", "--jwt-jwks", jwks.to_str().unwrap()]);
    let status = |token: &str| {
        upgrade_status(
            server.addr,
            &format!("/hub?token={}", live_token(token)),
            "",
        )
    };
    let hup = || {
        let pid = server.pid().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    let becomes = |token: &str, want: u16| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while status(token) != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{token} never got {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(status("jwks_rsa"), 101);
    assert_eq!(status("jwks_new"), 401);
    // Replaced whole (a rename), as a key rotation job would.
    let next = dir.join("jwks.json.next");
    std::fs::copy(live_file("jwks_rotated.json"), &next).unwrap();
    std::fs::rename(&next, &jwks).unwrap();
    hup();
    becomes("jwks_new", 101);
    assert_eq!(status("jwks_rsa"), 401);
    assert_eq!(status("jwks_ec"), 101);
    assert!(rejected(server.addr, "jwt_unknown_key") >= 2);

    std::fs::write(&jwks, b"{not json").unwrap();
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("token key reload failed") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status("jwks_new"), 101, "the keys in use stayed");
    assert_eq!(status("jwks_rsa"), 401);
}

/// `--max-conns-per-user`: a user's connections are counted over every
/// shard, one past the cap is refused (503, `Retry-After`, counted as
/// per_user_cap) while other users are not affected, and a connection that
/// ends gives its place back. It needs a key to know users by.
#[test]
fn a_user_holds_at_most_its_cap_of_connections() {
    let secret = live_file("hs.secret");
    let server = support::Server::start(&[
        "serve",
        "--jwt-hs256-secret",
        &secret,
        "--max-conns-per-user",
        "2",
        "--shards",
        "2",
        "--tarpit-ms",
        "0",
    ]);
    let addr = server.addr;
    let target = |name: &str| format!("/hub?token={}", live_token(name));
    let first = hub(addr, live_token("hs_valid"));
    let _second = hub(addr, live_token("hs_valid"));
    let refusal = {
        use std::io::Write;
        let mut s = support::connect(addr);
        s.write_all(support::upgrade_request(&target("hs_valid"), "").as_bytes())
            .unwrap();
        support::read_response_head(&mut s)
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    assert!(
        refusal.1.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        refusal.1
    );
    assert_eq!(rejected(addr, "per_user_cap"), 1);
    let _bob = hub(addr, live_token("hs_bob"));
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while upgrade_status(addr, &target("hs_valid"), "") != 101 {
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["serve", "--max-conns-per-user", "2", "--check-config"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-conns-per-user needs a key"),
        "{stderr}"
    );
}

/// `--jwt-first-message-s`: a hub WebSocket may come without a token and
/// send it as its first message; until then every other request is
/// answered with what to send, a refused token leaves it waiting, and one
/// that never sends a good token is closed with 4001 when its time is up.
/// Other routes and event streams still need the token at the upgrade.
#[test]
fn a_token_may_come_as_the_first_message() {
    let secret = live_file("hs.secret");
    let server = support::Server::start(&[
        "serve",
        "--jwt-hs256-secret",
        &secret,
        "--jwt-first-message-s",
        "1",
    ]);
    let addr = server.addr;
    let ask = |ws: &mut support::hub::HubWs, text: &str| {
        support::hub::send_text(ws, text);
        support::hub::next_text(ws)
    };
    let started = std::time::Instant::now();
    let mut waits = hub(addr, "");
    let mut authed = hub(addr, "");
    let early = ask(&mut authed, r#"{"op":"subscribe","topics":["chat"]}"#);
    assert!(early.contains("send the token first"), "{early}");
    let bad = ask(
        &mut authed,
        &format!(
            r#"{{"op":"auth","token":"{}"}}"#,
            live_token("hs_wrong_key")
        ),
    );
    assert!(bad.contains("auth refused: bad token signature"), "{bad}");
    let ok = ask(
        &mut authed,
        &format!(r#"{{"op":"auth","token":"{}"}}"#, live_token("hs_valid")),
    );
    let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
    assert_eq!(v["op"], "authed", "{ok}");
    assert_eq!(v["sub"], "alice", "{ok}");
    assert!(v["exp"].as_u64().is_some(), "{ok}");
    let again = ask(
        &mut authed,
        &format!(r#"{{"op":"auth","token":"{}"}}"#, live_token("hs_valid")),
    );
    assert!(again.contains("send refresh to replace it"), "{again}");
    // Now the token's claims decide.
    let denied = ask(&mut authed, r#"{"op":"subscribe","topics":["secret"]}"#);
    assert!(denied.contains("may not subscribe to secret"), "{denied}");
    let subscribed = ask(&mut authed, r#"{"op":"subscribe","topics":["chat"]}"#);
    assert!(subscribed.contains("\"subscribed\""), "{subscribed}");

    let (code, reason) = support::hub::close_frame(&mut waits);
    assert_eq!(code, 4001);
    assert_eq!(reason, "token required");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The authenticated one outlives the wait.
    let echoed = ask(&mut authed, r#"{"op":"publish","topic":"chat","data":1}"#);
    assert!(echoed.contains("\"data\":1"), "{echoed}");

    assert_eq!(upgrade_status(addr, "/echo", ""), 401);
    let events = {
        use std::io::Write;
        let mut s = support::connect(addr);
        s.write_all(
            b"GET /hub/events?topics=chat HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
        )
        .unwrap();
        support::read_response_head(&mut s).0
    };
    assert_eq!(events, 401);
}

/// A server with a `socketio` route at `/socket.io/` (and `routes`, more
/// `[[routes]]`) requiring tokens `fixture`'s HS256 secret verifies, with
/// `args`.
fn socketio_server(fixture: &Fixture, routes: &str, args: &[&str]) -> support::Server {
    let config = fixture.dir.join("socketio.toml");
    std::fs::write(
        &config,
        format!(
            "[[routes]]\npath = \"/socket.io/\"\nkind = \"socketio\"\ncors-origin = \"*\"\n\n{routes}"
        ),
    )
    .unwrap();
    let secret = fixture.dir.join("hs.secret");
    let mut all = vec![
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--jwt-hs256-secret",
        secret.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    support::Server::start(&all)
}

/// A `socketio` route under `--jwt-*`: the stock socket.io-client carries
/// its token in the query of every Engine.IO request; one that does not
/// verify cannot connect, the token's claims decide which rooms a socket
/// may join and publish to (a refusal is the event's error answer, the
/// socket stays), and the session ends by the server when the token
/// expires. On two shards and both drivers.
#[test]
fn socketio_rooms_follow_the_token() {
    for backend in support::hub::BACKENDS {
        // Made now: the short token's seconds start here.
        let fixture = fresh(&format!("jwt-socketio-{backend}"));
        let server = socketio_server(&fixture, "", &["--shards", "2", "--backend", backend]);
        let url = format!("http://{}", server.addr);
        support::socketio::node_scenarios(
            &url,
            &["hub_tokens"],
            &[
                ("TOKEN", &fixture.tokens["hs_valid"]),
                ("BAD_TOKEN", &fixture.tokens["hs_wrong_key"]),
                ("SHORT_TOKEN", &fixture.tokens["hs_soon"]),
            ],
            backend,
        );
    }
}

/// An embedder's handler learns who the client is: `UpgradeRequest::user`
/// is the verified token's `sub` (what a hook or handler decides by), and
/// a token that does not verify never reaches the handler.
#[test]
fn an_app_handler_sees_the_tokens_user() {
    use surge::app::{App, Config, Handler, Upgrade, UpgradeRequest, Ws};
    struct Who;
    impl Handler for Who {
        fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
            Upgrade::accept().data(req.user.as_deref().unwrap_or("nobody").to_owned())
        }
        fn open(&self, ws: &mut Ws<'_>) {
            let who = ws.data::<String>().cloned().unwrap_or_default();
            ws.send_text(&who);
        }
    }
    let mut config = Config::default();
    config.admission.policy.jwt = Some(
        surge::auth::Tokens::from_file(
            std::path::Path::new(&live_file("hs.secret")),
            |p| Keys::hs256_secret_file(p),
            Vec::new(),
        )
        .unwrap(),
    );
    let running = App::new()
        .config(config)
        .route("/who", Who)
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(1)
        .start()
        .expect("start");
    let addr = running.local_addrs()[0];
    let url = format!("ws://{addr}/who?token={}", live_token("hs_bob"));
    let (mut ws, _) =
        tungstenite::client(url.as_str(), support::Patient(support::connect(addr))).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "bob");
    let refused = format!("/who?token={}", live_token("hs_wrong_key"));
    assert_eq!(upgrade_status(addr, &refused, ""), 401);
}

/// The server API's disconnect reaches a user's Socket.IO sessions too, on
/// both transports, whichever shard owns them, and no other user's.
#[test]
fn the_server_api_ends_a_users_socketio_sessions() {
    let fixture = fresh("jwt-socketio-api");
    let key = "k".repeat(24);
    let key_file = fixture.dir.join("api.key");
    std::fs::write(&key_file, &key).unwrap();
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = socketio_server(
        &fixture,
        "",
        &[
            "--api-listen",
            &api.to_string(),
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--shards",
            "2",
        ],
    );
    support::socketio::node_scenarios(
        &format!("http://{}", server.addr),
        &["hub_api_disconnect"],
        &[
            ("TOKEN", &fixture.tokens["hs_valid"]),
            ("OTHER_TOKEN", &fixture.tokens["hs_bob"]),
            ("API_URL", &format!("http://{api}")),
            ("API_KEY", &key),
        ],
        "api disconnect",
    );
}

/// A Socket.IO handler learns the user too: `Handshake::user()` is the
/// `sub` of the token the Engine.IO handshake carried. Driven over raw
/// long-polling: the handshake, the CONNECT, the handler's answer.
#[test]
fn a_socketio_handler_sees_the_tokens_user() {
    use std::io::{Read, Write};
    use surge::app::{App, Config, Connect, ConnectRequest, Namespaces, SocketIoHandler};
    struct Who;
    impl SocketIoHandler for Who {
        fn connect(&self, req: &ConnectRequest<'_>) -> Connect {
            Connect::refuse(format!(
                "you are {}",
                req.handshake().user().unwrap_or("nobody")
            ))
        }
    }
    let mut config = Config::default();
    config.admission.policy.jwt = Some(
        surge::auth::Tokens::from_file(
            std::path::Path::new(&live_file("hs.secret")),
            |p| Keys::hs256_secret_file(p),
            Vec::new(),
        )
        .unwrap(),
    );
    let running = App::new()
        .config(config)
        .socketio("/socket.io/", Namespaces::new().namespace("/", Who))
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(1)
        .start()
        .expect("start");
    let addr = running.local_addrs()[0];
    let token = live_token("hs_bob");
    let request = |method: &str, query: &str, body: &str| {
        let mut s = support::connect(addr);
        write!(
            s,
            "{method} /socket.io/?EIO=4&transport=polling&token={token}{query} HTTP/1.1\r\n\
             Host: x\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let open = request("GET", "", "");
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no sid in {open}"))
        .to_owned();
    let posted = request("POST", &format!("&sid={sid}"), "40");
    assert!(posted.starts_with("HTTP/1.1 200"), "{posted}");
    let answer = request("GET", &format!("&sid={sid}"), "");
    assert!(
        answer.contains(r#"44{"message":"you are bob"}"#),
        "{answer}"
    );
}

/// `--jwt-first-message-s` on a `socketio` route: the Engine.IO handshake
/// may come without a token, and the CONNECT's `auth.token` gives it, with
/// the same claims; a CONNECT without a good one is refused with
/// CONNECT_ERROR saying why. An Engine.IO echo route still needs the token
/// at the handshake.
#[test]
fn a_socketio_token_may_come_in_the_connect_auth() {
    let fixture = fresh("jwt-socketio-auth");
    let server = socketio_server(
        &fixture,
        "[[routes]]\npath = \"/engine.io/\"\nkind = \"engineio-echo\"\n",
        &["--jwt-first-message-s", "5"],
    );
    support::socketio::node_scenarios(
        &format!("http://{}", server.addr),
        &["hub_auth_payload"],
        &[
            ("TOKEN", &fixture.tokens["hs_valid"]),
            ("BAD_TOKEN", &fixture.tokens["hs_wrong_key"]),
        ],
        "connect auth",
    );
    let (status, _, _) = support::http_get(server.addr, "/engine.io/?EIO=4&transport=polling");
    assert_eq!(status, 403);
}

/// A server that takes no tokens says so to a hub client that sends one
/// (`auth` or `refresh`), and the connection goes on.
#[test]
fn a_server_without_tokens_says_so() {
    let server = support::Server::start(&["serve"]);
    let mut ws = support::hub::hub_client(support::hub::loopback(1), server.addr);
    for op in ["auth", "refresh"] {
        support::hub::send_text(&mut ws, &format!(r#"{{"op":"{op}","token":"a.b.c"}}"#));
        let answer = support::hub::next_text(&mut ws);
        assert!(
            answer.contains("this server takes no tokens"),
            "{op}: {answer}"
        );
    }
    support::hub::send_text(&mut ws, r#"{"op":"subscribe","topics":["chat"]}"#);
    assert!(support::hub::next_text(&mut ws).contains("\"subscribed\""));
}
