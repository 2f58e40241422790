//! `surge load`: a load generator that speaks WebSocket through the crate's
//! own framing core. Modes: `echo` (round trips, every byte checked),
//! `connect` (handshakes per second), `hold` (many idle connections) and
//! `subscribe` (ticks: rate, sequence gaps, delivery latency). A progress
//! line per second goes to stderr; the last stdout line is `RESULT ...`.

mod engine;
mod report;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use engine::{Engine, Progress};
use report::Report;

/// What a run does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Send messages and check every echoed byte.
    Echo,
    /// Open, upgrade and close as fast as possible.
    Connect,
    /// Open connections and keep them idle.
    Hold,
    /// Count ticks (`SYMBOL SEQ SEND_TS_US PRICE`), gaps and latency.
    Subscribe,
}

/// How connect mode ends each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloseKind {
    /// RST at once (no TIME_WAIT on either side).
    Abrupt,
    /// A close frame, then wait for the server's.
    Clean,
}

/// `surge load` flags.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// echo | connect | hold | subscribe.
    #[arg(value_enum)]
    mode: Mode,
    /// ws://HOST:PORT/PATH
    #[arg(long)]
    url: String,
    /// Connections (in connect mode: upgrades kept in flight).
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Message size in bytes (echo).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Messages in flight per connection (echo).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Send binary messages instead of text (echo).
    #[arg(long)]
    binary: bool,
    /// Seconds to measure once every connection is open.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.9.
    #[arg(long)]
    sources: Option<String>,
    /// Client threads; connections are split evenly.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Upgrades pending at once per thread, so the accept queue is not overrun.
    #[arg(long, default_value_t = 256)]
    conns_in_flight: usize,
    /// Seconds a connect plus upgrade may take before it counts as a timeout.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// How connect mode closes.
    #[arg(long, value_enum, default_value_t = CloseKind::Abrupt)]
    close: CloseKind,
    /// Offer permessage-deflate (no context takeover either way) and
    /// inflate what arrives compressed; what is sent stays uncompressed.
    #[arg(long)]
    deflate: bool,
}

/// Settings every load thread shares.
#[derive(Debug)]
pub(crate) struct Plan {
    mode: Mode,
    target: SocketAddr,
    host: String,
    path: String,
    size: usize,
    pipeline: usize,
    binary: bool,
    duration: Duration,
    sources: Vec<IpAddr>,
    in_flight: usize,
    connect_timeout: Duration,
    close: CloseKind,
    deflate: bool,
}

fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url {url}: only ws:// URLs are supported"))?;
    let (host, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let with_port = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: no address"))?;
    Ok((addr, host.to_owned(), path.to_owned()))
}

/// `127.0.0.2-127.0.0.9` or a single address.
fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, String> {
    let bad = || format!("--sources {spec}: expected A.B.C.D or A.B.C.D-A.B.C.E");
    let (from, to) = spec.split_once('-').unwrap_or((spec, spec));
    let from: Ipv4Addr = from.trim().parse().map_err(|_| bad())?;
    let to: Ipv4Addr = to.trim().parse().map_err(|_| bad())?;
    let (a, b) = (u32::from(from), u32::from(to));
    if b < a || b - a > 65_535 {
        return Err(bad());
    }
    Ok((a..=b).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))).collect())
}

impl LoadArgs {
    fn plan(&self) -> Result<Plan, String> {
        let (target, host, path) = parse_url(&self.url)?;
        if self.conns == 0 || self.threads == 0 || self.pipeline == 0 {
            return Err("--conns, --threads and --pipeline must be at least 1".into());
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be in (0, 3600] seconds".into());
        }
        Ok(Plan {
            mode: self.mode,
            target,
            host,
            path,
            size: self.size,
            pipeline: self.pipeline,
            binary: self.binary,
            duration: Duration::from_secs_f64(self.duration),
            sources: self
                .sources
                .as_deref()
                .map(parse_sources)
                .transpose()?
                .unwrap_or_default(),
            in_flight: self.conns_in_flight.max(1),
            connect_timeout: Duration::from_secs_f64(self.connect_timeout.max(0.1)),
            close: self.close,
            deflate: self.deflate,
        })
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Echo => "echo",
        Mode::Connect => "connect",
        Mode::Hold => "hold",
        Mode::Subscribe => "subscribe",
    }
}

/// Runs a load; exit 0 when it completed with no error, 1 otherwise.
pub fn run(args: &LoadArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("surge load: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::sys::raise_fd_limit() {
        eprintln!("surge load: could not raise the descriptor limit: {e}");
    }
    let stop = engine::stop_on_sigint();
    let threads = args.threads.min(args.conns);
    let progress: Vec<Progress> = (0..threads).map(|_| Progress::default()).collect();
    let started = Instant::now();
    let mut total = Report::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = args.conns / threads + usize::from(t < args.conns % threads);
                let (plan, progress, stop) = (&plan, &progress[t], &*stop);
                scope.spawn(move || Engine::new(plan, share, t as u64 + 1, progress, stop).run())
            })
            .collect();
        let mut last_messages = 0;
        let mut last = Instant::now();
        let mut all_open_reported = false;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            let open: u64 = progress
                .iter()
                .map(|p| p.open.load(Ordering::Relaxed))
                .sum();
            if !all_open_reported && open as usize >= args.conns {
                all_open_reported = true;
                eprintln!(
                    "all {open} connections open after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            }
            if last.elapsed() >= Duration::from_secs(1) {
                let sum = |f: fn(&Progress) -> u64| progress.iter().map(f).sum::<u64>();
                let messages = sum(|p| p.messages.load(Ordering::Relaxed));
                let rate = (messages - last_messages) as f64 / last.elapsed().as_secs_f64();
                eprintln!(
                    "t={:.0}s open={} msgs={messages} ({rate:.0}/s) handshakes={} errors={}",
                    started.elapsed().as_secs_f64(),
                    sum(|p| p.open.load(Ordering::Relaxed)),
                    sum(|p| p.handshakes.load(Ordering::Relaxed)),
                    sum(|p| p.errors.load(Ordering::Relaxed)),
                );
                last_messages = messages;
                last = Instant::now();
            }
        }
        for h in handles {
            total.merge(&h.join().expect("load thread panicked"));
        }
    });
    if stop.load(Ordering::Relaxed) {
        eprintln!("interrupted: partial result");
    }
    println!("{}", total.errors_line());
    println!(
        "{}",
        total.result_line(mode_name(plan.mode), args.conns, plan.size)
    );
    if total.errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_sources_parse() {
        let (addr, host, path) = parse_url("ws://127.0.0.1:9001/ticker/AAPL").unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (9001, "127.0.0.1:9001", "/ticker/AAPL")
        );
        assert_eq!(parse_url("ws://127.0.0.1:9").unwrap().2, "/");
        assert!(parse_url("wss://x").is_err());
        assert_eq!(parse_sources("127.0.0.2-127.0.0.9").unwrap().len(), 8);
        assert_eq!(parse_sources("127.0.0.2").unwrap().len(), 1);
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_sources("nope").is_err());
    }
}
