//! wss/https: `surge echo --tls-cert --tls-key` against a rustls client
//! (through tungstenite) and Python `websockets`, certificate reload on
//! SIGHUP, and every refusal: flags, files, plain HTTP on a TLS port,
//! silence and garbage within the handshake deadline. Each server test runs
//! on both drivers.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::*;
use tungstenite::Message;

/// A self-signed certificate for localhost and 127.0.0.1.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn make_cert(common_name: &str) -> TestCert {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("surge-tls-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the certificate and key as `cert.pem` and `key.pem` in `dir`
/// (replacing them by rename, as a deployment tool would).
fn install(dir: &Path, cert: &TestCert) -> (String, String) {
    let write = |name: &str, text: &str| {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
        dir.join(name).to_str().unwrap().to_owned()
    };
    (
        write("cert.pem", &cert.cert_pem),
        write("key.pem", &cert.key_pem),
    )
}

const BACKENDS: [&str; 2] = ["epoll", "uring"];

/// `surge echo` over TLS with `cert` on `backend`.
fn start(dir: &Path, cert: &TestCert, backend: &str, extra: &[&str]) -> Server {
    let (cert_path, key_path) = install(dir, cert);
    let mut args = vec!["echo", "--backend", backend];
    args.extend(["--tls-cert", &cert_path, "--tls-key", &key_path]);
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    assert!(
        server.ready_lines[0].contains(&format!("backend={backend}")),
        "{:?}",
        server.ready_lines
    );
    server
}

fn client_config(trusted: &[&TestCert]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type TlsClient = StreamOwned<ClientConnection, Patient>;

/// A TLS connection to `addr` (handshake completed) trusting `trusted`.
fn tls_connect(addr: SocketAddr, trusted: &[&TestCert]) -> TlsClient {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(client_config(trusted), name).unwrap();
    let mut stream = StreamOwned::new(conn, Patient(connect(addr)));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
}

/// The DER of the certificate the server presented.
fn peer_cert(stream: &TlsClient) -> Vec<u8> {
    stream.conn.peer_certificates().expect("a peer certificate")[0].to_vec()
}

type Ws = tungstenite::WebSocket<TlsClient>;

fn open_wss(addr: SocketAddr, trusted: &[&TestCert]) -> Ws {
    let stream = tls_connect(addr, trusted);
    let (ws, response) =
        tungstenite::client(format!("wss://localhost:{}/echo", addr.port()), stream)
            .expect("wss upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn assert_echoes(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).unwrap();
    assert_eq!(ws.read().unwrap(), message);
}

/// Runs `surge ARGS` to its exit, which must come within 10 s.
fn surge_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_surge")).args(args),
        Duration::from_secs(10),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sighup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn tls_echoes_text_and_binary() {
    for backend in BACKENDS {
        tls_echoes_text_and_binary_on(backend);
    }
}

fn tls_echoes_text_and_binary_on(backend: &str) {
    let dir = temp_dir(&format!("echo-{backend}"));
    let cert = make_cert("surge test");
    let server = start(&dir, &cert, backend, &[]);
    let mut ws = open_wss(server.addr, &[&cert]);
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_echoes(&mut ws, Message::Text("hello over tls".into()));
    assert_echoes(&mut ws, Message::Binary(vec![0, 1, 2, 255]));
    // Larger than a TLS record and than rustls' send buffer, so replies are
    // encrypted in pieces across several writable edges.
    let big: Vec<u8> = (0..(1 << 20) + 7).map(|i| (i * 31 % 251) as u8).collect();
    assert_echoes(&mut ws, Message::Binary(big));
    assert_echoes(&mut ws, Message::Text("κόσμε €𐍈 ".repeat(5000)));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
}

#[test]
fn tls_python_websockets_round_trips() {
    for backend in BACKENDS {
        tls_python_websockets_round_trips_on(backend);
    }
}

fn tls_python_websockets_round_trips_on(backend: &str) {
    let dir = temp_dir(&format!("python-{backend}"));
    let cert = make_cert("surge test");
    let server = start(&dir, &cert, backend, &[]);
    let python = venv().join("bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/echo_client.py");
    let url = format!("wss://127.0.0.1:{}/echo", server.addr.port());
    let cafile = dir.join("cert.pem");
    let out = output_within(
        Command::new(&python).args([script, &url, cafile.to_str().unwrap()]),
        Duration::from_secs(120),
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{backend}: {report}\nserver log:\n{}",
        server.stderr()
    );
    assert!(report.contains("all round trips OK"), "{backend}: {report}");
}

#[test]
fn tls_healthz_and_metrics_over_https() {
    for backend in BACKENDS {
        tls_healthz_and_metrics_over_https_on(backend);
    }
}

fn tls_healthz_and_metrics_over_https_on(backend: &str) {
    let dir = temp_dir(&format!("healthz-{backend}"));
    let cert = make_cert("surge test");
    let server = start(&dir, &cert, backend, &[]);
    for (path, expect) in [("/healthz", "ok\n"), ("/metrics", "surge_connections_open")] {
        let mut s = tls_connect(server.addr, &[&cert]);
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        // The server ends with close_notify, so this is a clean end.
        s.read_to_string(&mut text).expect("a clean TLS close");
        assert!(text.starts_with("HTTP/1.1 200 "), "{path}: {text}");
        assert!(text.contains(expect), "{path}: {text}");
    }
}

#[test]
fn tls_sighup_reloads_the_certificate_without_dropping_connections() {
    for backend in BACKENDS {
        tls_sighup_reloads_the_certificate_without_dropping_connections_on(backend);
    }
}

fn tls_sighup_reloads_the_certificate_without_dropping_connections_on(backend: &str) {
    let dir = temp_dir(&format!("reload-{backend}"));
    let a = make_cert("surge test A");
    let b = make_cert("surge test B");
    let server = start(&dir, &a, backend, &[]);
    let mut first = open_wss(server.addr, &[&a, &b]);
    assert_eq!(peer_cert(first.get_ref()), a.der.to_vec());
    assert_echoes(&mut first, Message::Text("before".into()));

    install(&dir, &b);
    sighup(&server);
    // The reload runs on its own thread: poll until new connections see B.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = tls_connect(server.addr, &[&a, &b]);
        if peer_cert(&probe) == b.der.to_vec() {
            break;
        }
        assert!(Instant::now() < deadline, "still serving A after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_echoes(&mut first, Message::Text("after".into()));
    assert_echoes(&mut first, Message::Binary(vec![7; 70_000]));
    let mut second = open_wss(server.addr, &[&b]);
    assert_eq!(peer_cert(second.get_ref()), b.der.to_vec());
    assert_echoes(&mut second, Message::Text("new cert".into()));

    // A broken file on reload: an error line, and B stays in service.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    sighup(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("TLS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no reload error logged: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.stderr().contains("cert.pem"),
        "the error names the file: {}",
        server.stderr()
    );
    let mut third = open_wss(server.addr, &[&b]);
    assert_eq!(peer_cert(third.get_ref()), b.der.to_vec());
    assert_echoes(&mut third, Message::Text("still B".into()));
    assert_echoes(&mut first, Message::Text("still open".into()));
}

#[test]
fn tls_flags_must_come_in_pairs() {
    let dir = temp_dir("pairs");
    let (cert, key) = install(&dir, &make_cert("surge test"));
    let (code, stderr) = surge_exit(&["echo", "--tls-cert", &cert]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let (code, stderr) = surge_exit(&["echo", "--tls-key", &key]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

#[test]
fn tls_unusable_files_are_refused_by_name() {
    let dir = temp_dir("files");
    let (cert, key) = install(&dir, &make_cert("surge test"));
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (code, stderr) = surge_exit(&["echo", "--tls-cert", missing, "--tls-key", &key]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(missing), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let garbage = garbage.to_str().unwrap();
    let (code, stderr) = surge_exit(&["echo", "--tls-cert", &cert, "--tls-key", garbage]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(garbage), "{stderr}");
    assert!(stderr.contains("no PEM private key"), "{stderr}");

    // A key that is not the certificate's.
    let other = dir.join("other.pem");
    std::fs::write(&other, make_cert("other").key_pem).unwrap();
    let other = other.to_str().unwrap();
    let (code, stderr) = surge_exit(&["echo", "--tls-cert", &cert, "--tls-key", other]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(other), "{stderr}");
}

#[test]
fn tls_auto_backend_serves_and_reports_its_driver() {
    let dir = temp_dir("auto");
    let cert = make_cert("surge test");
    let (cert_path, key_path) = install(&dir, &cert);
    let server = Server::start(&[
        "echo",
        "--backend",
        "auto",
        "--tls-cert",
        &cert_path,
        "--tls-key",
        &key_path,
    ]);
    let line = &server.ready_lines[0];
    assert!(
        line.contains("backend=uring") || line.contains("backend=epoll"),
        "{line}"
    );
    let mut ws = open_wss(server.addr, &[&cert]);
    assert_echoes(&mut ws, Message::Text("auto".into()));
}

#[test]
fn tls_plain_http_on_a_tls_port_is_closed() {
    for backend in BACKENDS {
        tls_plain_http_on_a_tls_port_is_closed_on(backend);
    }
}

fn tls_plain_http_on_a_tls_port_is_closed_on(backend: &str) {
    let dir = temp_dir(&format!("plain-{backend}"));
    let cert = make_cert("surge test");
    let server = start(&dir, &cert, backend, &[]);
    for request in [
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        upgrade_request("/echo", "").into_bytes(),
        vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
    ] {
        let mut s = connect(server.addr);
        s.write_all(&request).unwrap();
        let started = Instant::now();
        // Closed at once (after an alert), not at the handshake deadline.
        assert_tcp_closed(&mut s, Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Still serving.
    let mut ws = open_wss(server.addr, &[&cert]);
    assert_echoes(&mut ws, Message::Text("still here".into()));
}

#[test]
fn tls_silent_clients_meet_the_handshake_deadline() {
    for backend in BACKENDS {
        tls_silent_clients_meet_the_handshake_deadline_on(backend);
    }
}

fn tls_silent_clients_meet_the_handshake_deadline_on(backend: &str) {
    let dir = temp_dir(&format!("silent-{backend}"));
    let cert = make_cert("surge test");
    let server = start(&dir, &cert, backend, &["--handshake-timeout-ms", "500"]);
    // Silent before the TLS handshake, and silent after it (no request):
    // the one deadline covers both.
    let started = Instant::now();
    let mut raw = connect(server.addr);
    let mut tls = tls_connect(server.addr, &[&cert]);
    assert_tcp_closed(&mut raw, Duration::from_secs(5));
    let mut buf = [0u8; 64];
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match read_resuming(&mut tls, &mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) => {}
        other => panic!("expected the server to drop the connection: {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    let mut ws = open_wss(server.addr, &[&cert]);
    assert_echoes(&mut ws, Message::Text("after the silent ones".into()));
}

#[test]
fn tls_shutdown_closes_with_going_away() {
    for backend in BACKENDS {
        tls_shutdown_closes_with_going_away_on(backend);
    }
}

fn tls_shutdown_closes_with_going_away_on(backend: &str) {
    let dir = temp_dir(&format!("shutdown-{backend}"));
    let cert = make_cert("surge test");
    let server = start(&dir, &cert, backend, &["--drain-ms", "100"]);
    let mut ws = open_wss(server.addr, &[&cert]);
    assert_echoes(&mut ws, Message::Text("before shutdown".into()));
    let pid = server.pid().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1001, "{backend}")
        }
        other => panic!("{backend}: expected a 1001 close, got {other:?}"),
    }
    // Answering the close and hanging up lets the server finish at once.
    let _ = ws.flush();
    drop(ws);
    let status = server.terminate();
    assert!(status.success(), "{backend}: {status:?}");
}
