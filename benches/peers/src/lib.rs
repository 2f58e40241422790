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

/// The value of `--NAME VALUE`, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let flag = format!("--{name}");
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == flag)
        .map_or(Some(default), |w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("{flag}: bad value"))
}
