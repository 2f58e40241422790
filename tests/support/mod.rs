//! Helpers shared by the real-socket tests: start `surge` on a free port,
//! speak raw HTTP and hand-built frames (independent of the crate's own
//! encoder, so a bug there cannot hide itself), and find the test venv.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) mod hub;
pub(crate) mod redis;
pub(crate) mod refusing_proxy;
pub(crate) mod socketio;

/// A running `surge` process, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// Every listener, in the order the server reported them.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The readiness lines as printed.
    pub(crate) ready_lines: Vec<String>,
    /// Everything the server has written to stderr so far.
    stderr_text: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `surge ARGS... --listen 127.0.0.1:0`, once it says it is listening.
    /// `SURGE_TEST_BACKEND` and `SURGE_TEST_SHARDS` choose the driver and
    /// shard count for servers whose arguments do not, so scripts/test.sh
    /// can run the whole suite on every combination.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_listening(args, 1)
    }

    /// Like `start`, with `listeners` times `--listen 127.0.0.1:0`; waits
    /// (10 s in all) for one readiness line per listener.
    pub(crate) fn start_listening(args: &[&str], listeners: usize) -> Self {
        Self::launch(args, &vec!["127.0.0.1:0".to_owned(); listeners], None)
    }

    /// Like `start`, listening on `addr`: a restarted server where the
    /// previous one was, for clients that reconnect.
    pub(crate) fn start_at(args: &[&str], addr: SocketAddr) -> Self {
        Self::launch(args, &[addr.to_string()], None)
    }

    /// Like `start`, in a process that may hold at most `max_fds`
    /// descriptors (soft and hard limit, so the server cannot raise it).
    pub(crate) fn start_with_fd_limit(args: &[&str], max_fds: u64) -> Self {
        Self::launch(args, &["127.0.0.1:0".to_owned()], Some(max_fds))
    }

    fn launch(args: &[&str], listen: &[String], max_fds: Option<u64>) -> Self {
        let mut extra = Vec::new();
        let is_server = matches!(args.first(), Some(&"echo" | &"serve"));
        for (flag, var) in [
            ("--backend", "SURGE_TEST_BACKEND"),
            ("--shards", "SURGE_TEST_SHARDS"),
        ] {
            if let (true, false, Ok(value)) = (is_server, args.contains(&flag), std::env::var(var))
            {
                extra.extend([flag.to_owned(), value]);
            }
        }
        let mut command = match max_fds {
            None => Command::new(env!("CARGO_BIN_EXE_surge")),
            Some(n) => {
                // The shell sets the limit and execs, so the pid is surge's.
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_surge"));
                sh
            }
        };
        let child = command
            .args(args)
            .args(&extra)
            .args(listen.iter().flat_map(|addr| ["--listen", addr]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn surge");
        // Owned by the guard from here on, so a failed start still kills it.
        let mut server = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            addrs: Vec::new(),
            ready_lines: Vec::new(),
            stderr_text: Default::default(),
        };
        let mut stderr = server.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr_text = std::sync::Arc::clone(&server.stderr_text);
        let sink = std::sync::Arc::clone(&stderr_text);
        // Reads stderr to its end (so the server never blocks on a full
        // pipe), sending each readiness line, or everything seen if stderr
        // closes first.
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            let mut scanned = 0;
            while let Ok(n) = read_resuming(&mut stderr, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                // Only whole lines: the readiness line may arrive in pieces.
                while let Some(nl) = seen[scanned..].iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&seen[scanned..scanned + nl]).into_owned();
                    scanned += nl + 1;
                    if line.starts_with("surge listening on ") {
                        let _ = tx.send(Ok(line));
                    }
                }
            }
            let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
        });
        // PROXY listeners report after the plain ones.
        let listeners = listen.len() + args.iter().filter(|a| **a == "--proxy-listen").count();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.ready_lines.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(line)) => server.ready_lines.push(line),
                Ok(Err(stderr)) => panic!("surge exited before listening: {stderr}"),
                Err(_) => panic!(
                    "surge did not report {listeners} listener(s) within 10 s; stderr so far:\n{}",
                    String::from_utf8_lossy(&stderr_text.lock().unwrap())
                ),
            }
        }
        server.addrs = server
            .ready_lines
            .iter()
            .map(|line| {
                line.split_whitespace()
                    .nth(3)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("unreadable readiness line {line:?}"))
            })
            .collect();
        server.addr = server.addrs[0];
        server
    }

    /// What the server has printed to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr_text.lock().unwrap()).into_owned()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and waits for the exit status (bounded).
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY-free: plain kill(1) keeps the test free of libc.
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "surge did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP stream whose reads and writes resume after EINTR. Linux fails a
/// blocking call on a socket with a timeout (`SO_RCVTIMEO`) with EINTR
/// when the process is stopped and resumed (SIGSTOP/SIGCONT, a cgroup
/// freeze), even with no signal handler installed, and tungstenite and
/// rustls pass that error up as if the connection had failed.
pub(crate) struct Patient(pub(crate) TcpStream);

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        read_resuming(&mut self.0, buf)
    }
}

impl Write for Patient {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl std::ops::Deref for Patient {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.0
    }
}

impl std::ops::DerefMut for Patient {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.0
    }
}

/// `Read::read`, resumed after EINTR (see [`Patient`]).
pub(crate) fn read_resuming(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A raw TCP client with a read timeout, so no test can hang.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub(crate) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub(crate) const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A valid upgrade request with `extra` header lines (each ending in CRLF).
pub(crate) fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads an HTTP response head; returns (status, head text).
pub(crate) fn read_response_head(s: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match read_resuming(s, &mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "response head cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    let text = String::from_utf8(head).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// Connects and upgrades; panics unless the answer is a correct 101.
pub(crate) fn open_ws(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let (status, head) = read_response_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
        "{head}"
    );
    s
}

/// A client frame built by hand: FIN/RSV/opcode byte, masked payload.
pub(crate) fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xFA, 0x21, 0x3D];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A final text frame.
pub(crate) fn text(payload: &[u8]) -> Vec<u8> {
    frame(0x81, payload)
}

/// A final binary frame.
pub(crate) fn binary(payload: &[u8]) -> Vec<u8> {
    frame(0x82, payload)
}

/// A close frame with a code and reason.
pub(crate) fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(0x88, &p)
}

/// Reads one server frame: (first byte, payload). Server frames are never masked.
pub(crate) fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).expect("frame header");
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).expect("frame payload");
    (head[0], payload)
}

/// Reads frames until a close; returns its code (None for an empty close).
pub(crate) fn read_close(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (first, payload) = read_frame(s);
        if first & 0x0F == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

/// Asserts the server closes the TCP connection within `within`.
pub(crate) fn assert_tcp_closed(s: &mut TcpStream, within: Duration) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    loop {
        match read_resuming(s, &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection still open after {:?}: {e}", start.elapsed()),
        }
    }
}

/// A raw TCP client whose source address is `from` (127.0.0.2, ...), so
/// one test can act as many distinct clients.
pub(crate) fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind source address");
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .expect("connect");
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Drops a connection with a TCP reset instead of a FIN.
pub(crate) fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// The sum of a metric over its labels (or its one unlabelled value), read
/// from `GET /metrics` with a plain HTTP request.
pub(crate) fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = connect(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The Python venv with kosoku and websockets, made by scripts/test.sh.
pub(crate) fn venv() -> PathBuf {
    let dir = std::env::var_os("SURGE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    assert!(
        dir.join("bin/python").exists(),
        "no Python venv at {}: run `bash scripts/test.sh`, which creates it (or set SURGE_VENV)",
        dir.display()
    );
    dir
}

/// Runs `cmd` to completion with its output captured, killing it (and
/// failing the test with what it printed) if it outlives `limit`.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    match status {
        Some(status) => std::process::Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} still running after {limit:?}; killed. It printed:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// `GET path` over plain HTTP with a real client (ureq): status, headers
/// and body; any status is returned, not raised.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = response.body_mut().read_to_string().unwrap();
    (response.status().as_u16(), headers, body)
}

/// A header's value, by case-insensitive name.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`); `pid` may be
/// `"self"` for the test process.
pub(crate) fn proc_status_kib(pid: impl std::fmt::Display, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// Descriptors a process holds now.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// Polls a metric (bounded: 20 s) until `ok` holds; its value then.
pub(crate) fn wait_metric(addr: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric(addr, name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stuck at {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
