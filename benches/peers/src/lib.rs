//! What every peer server shares: `--listen ADDR` and the readiness line.

use std::net::SocketAddr;

/// The `--listen` address (default 127.0.0.1:9001).
pub fn listen_addr() -> SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--listen")
        .map_or("127.0.0.1:9001", |w| w[1].as_str())
        .parse()
        .expect("--listen ADDR")
}

/// Prints the line the harness waits for.
pub fn ready(name: &str, addr: SocketAddr) {
    eprintln!("{name} listening on {addr}");
}
