//! The API's sockets, away from the shards: one thread accepts, and each
//! connection is served on a thread of its own, at most `--api-max-conns`
//! at once and at most half of them (rounded up) from one client address,
//! so a client that stalls its connections leaves the other half to
//! everyone else (more are answered 503 at once). A connection carries one
//! request: its whole head and body must arrive within `--api-timeout-ms`
//! of the accept (408 otherwise), so a slow client holds one thread for a
//! bounded time and never holds up another's request.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::handlers::Api;
use super::request::{parse_head, Answer, MAX_HEAD};
use crate::metrics::ApiStats;

/// After an answer that leaves part of the request unread (a refused
/// body), what the peer still sends is read and dropped for this long at
/// most, so that closing does not reset the connection before the peer
/// has read the answer.
const LINGER: Duration = Duration::from_secs(1);
/// The most bytes dropped that way.
const LINGER_BYTES: usize = 16 << 20;
/// How long an answer may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a connection's thread needs.
pub(crate) struct Listener {
    pub(crate) api: Api,
    pub(crate) stats: Arc<ApiStats>,
    pub(crate) max_conns: usize,
    pub(crate) timeout: Duration,
    active: Mutex<Active>,
}

/// A connection's place in [`Active`], given back when it ends.
struct Slot<'a>(&'a Listener, IpAddr);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// The connections being served, in all and by client address.
#[derive(Debug, Default)]
struct Active {
    all: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Listener {
    pub(crate) fn new(api: Api, stats: Arc<ApiStats>, max_conns: usize, timeout: Duration) -> Self {
        Self {
            api,
            stats,
            max_conns,
            timeout,
            active: Mutex::default(),
        }
    }

    /// Most connections one client address may have served at once.
    fn per_client(&self) -> usize {
        self.max_conns.div_ceil(2)
    }

    /// Counts a connection from `client` in, unless a cap is reached.
    fn enter(&self, client: IpAddr) -> bool {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let mine = active.by_client.get(&client).copied().unwrap_or(0);
        if active.all >= self.max_conns || mine >= self.per_client() {
            return false;
        }
        active.all += 1;
        active.by_client.insert(client, mine + 1);
        true
    }

    /// Counts a connection from `client` out.
    fn leave(&self, client: IpAddr) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.all -= 1;
        if let Some(n) = active.by_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                active.by_client.remove(&client);
            }
        }
    }

    /// Accepts until the process ends.
    pub(crate) fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, client) = match listener.accept() {
                Ok((s, peer)) => (s, peer.ip()),
                Err(e) => {
                    // Out of descriptors or memory: not worth a busy loop.
                    tracing::warn!("server API: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let accepted = Instant::now();
            if !self.enter(client) {
                self.refuse_busy(stream);
                continue;
            }
            let me = Arc::clone(&self);
            let spawned = std::thread::Builder::new()
                .name("surge-api-conn".into())
                .spawn(move || {
                    // Counted out even if serving panics.
                    let _slot = Slot(&me, client);
                    me.serve(stream, accepted);
                });
            if let Err(e) = spawned {
                self.leave(client);
                tracing::warn!("server API: cannot start a connection thread: {e}");
            }
        }
    }

    /// Over the cap: a 503, written without waiting (a fresh socket's
    /// send buffer takes it whole), and the connection closed.
    fn refuse_busy(&self, mut stream: TcpStream) {
        let answer = Answer::error(503, "too many API connections at once; try again")
            .with_header("Retry-After", "1");
        self.stats.count(answer.status);
        let _ = stream.set_nonblocking(true);
        let _ = stream.write_all(&answer.encode());
        let _ = stream.shutdown(Shutdown::Write);
    }

    /// One request on `stream`, then the connection closes.
    fn serve(&self, mut stream: TcpStream, accepted: Instant) {
        let deadline = accepted + self.timeout;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let (answer, unread) = self.answer(&mut stream, deadline);
        self.stats.count(answer.status);
        if stream.write_all(&answer.encode()).is_err() {
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
        if unread {
            linger(&mut stream);
        }
    }

    /// The answer to the request on `stream`, and whether part of the
    /// request may be left unread.
    fn answer(&self, stream: &mut TcpStream, deadline: Instant) -> (Answer, bool) {
        let mut buf = Vec::with_capacity(1024);
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(refused) => return (refused, true),
            }
            let room = MAX_HEAD + 1 - buf.len().min(MAX_HEAD);
            match read_some(stream, &mut buf, room, deadline) {
                Ok(0) if buf.is_empty() => {
                    return (Answer::error(400, "no request"), false);
                }
                Ok(0) => return (Answer::error(400, "the request head is cut short"), false),
                Ok(_) => {}
                Err(refused) => return (refused, true),
            }
        };
        let (endpoint, len) = match self.api.admit(&head) {
            Ok(admitted) => admitted,
            Err(refused) => return (refused, true),
        };
        if head.expect_continue && len > 0 {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut body = buf.split_off(head.len);
        body.truncate(len);
        body.reserve_exact(len - body.len());
        while body.len() < len {
            let want = len - body.len();
            match read_some(stream, &mut body, want, deadline) {
                Ok(0) => return (Answer::error(400, "the body is cut short"), false),
                Ok(_) => {}
                Err(refused) => return (refused, true),
            }
        }
        (self.api.handle(endpoint, &head, &body), false)
    }
}

/// Reads at most `max` more bytes into `buf` before `deadline`; the 408
/// when it passes, a 400 when the read fails.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<usize, Answer> {
    let timed_out = || Answer::error(408, "the request did not arrive in time");
    let mut chunk = [0u8; 16 << 10];
    let want = max.min(chunk.len());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk[..want]) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(Answer::error(400, &format!("cannot read the request: {e}"))),
        }
    }
}

/// Reads and drops what the peer still sends, for a bounded time.
fn linger(stream: &mut TcpStream) {
    let until = Instant::now() + LINGER;
    let mut dropped = 0;
    let mut chunk = [0u8; 16 << 10];
    while dropped < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => dropped += n,
        }
    }
}
