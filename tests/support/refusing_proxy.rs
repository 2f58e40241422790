//! A loopback proxy for the tests of the fallback to server-sent events:
//! it answers every `Upgrade: websocket` request with 403 and forwards
//! anything else both ways, as some corporate proxies and networks do.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback proxy that answers every `Upgrade: websocket` request with
/// 403 and forwards anything else both ways, as some corporate proxies and
/// networks do. It can cut every forwarded connection and refuse new ones
/// for a while, as a broken network would.
pub(crate) struct RefusingProxy {
    pub(crate) addr: SocketAddr,
    /// Upgrades refused.
    pub(crate) refused: Arc<AtomicUsize>,
    /// New connections are dropped at once while set.
    blocked: Arc<AtomicBool>,
    /// Both sides of every forwarded connection, to cut.
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl RefusingProxy {
    pub(crate) fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            refused: Arc::default(),
            blocked: Arc::default(),
            open: Arc::default(),
            stop: Arc::default(),
        };
        let (refused, blocked, open, stop) = (
            Arc::clone(&proxy.refused),
            Arc::clone(&proxy.blocked),
            Arc::clone(&proxy.open),
            Arc::clone(&proxy.stop),
        );
        // Ends when the proxy is dropped.
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if !blocked.load(Ordering::Relaxed) => {
                        let (refused, open) = (Arc::clone(&refused), Arc::clone(&open));
                        std::thread::spawn(move || forward(client, upstream, &refused, &open));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        proxy
    }

    /// Cuts every forwarded connection; `block`: refuse new ones until
    /// called again with false.
    pub(crate) fn cut_and_block(&self, block: bool) {
        self.blocked.store(block, Ordering::Relaxed);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut_and_block(true);
    }
}

/// One client connection: its request head read, an upgrade refused,
/// anything else sent on to `upstream` with everything after it, both ways,
/// until either side ends.
fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    refused: &AtomicUsize,
    open: &Mutex<Vec<TcpStream>>,
) {
    client.set_nonblocking(false).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(n) if n > 0 && head.len() < 16 << 10 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if lower
        .lines()
        .any(|l| l.starts_with("upgrade:") && l.contains("websocket"))
    {
        refused.fetch_add(1, Ordering::Relaxed);
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return; // the server is down: the client sees the connection drop
    };
    if server.write_all(&head).is_err() {
        return;
    }
    client.set_read_timeout(None).unwrap();
    {
        let mut open = open.lock().unwrap();
        open.push(client.try_clone().unwrap());
        open.push(server.try_clone().unwrap());
    }
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = up.join();
}
