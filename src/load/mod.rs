//! `surge load`: a load generator that speaks WebSocket through the crate's
//! own framing core. Modes: `echo` (round trips, every byte checked),
//! `connect` (handshakes per second), `hold` (many idle connections),
//! `subscribe` (ticks: rate, sequence gaps, delivery latency; or, with
//! `--topics`, hub topics judged by their positions, and with `--resume`
//! reconnecting and resuming from them) and `publish` (hub publishes at a
//! steady rate). A progress line per second goes to stderr; the last
//! stdout line is `RESULT ...`.

mod client;
mod engine;
mod hub;
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
    /// Count ticks (`SYMBOL SEQ SEND_TS_US PRICE`), gaps and latency; with
    /// `--topics`, hub messages, gaps and duplicates by their positions.
    Subscribe,
    /// Publish to hub topics (`--topics`) at `--rate` messages per second.
    Publish,
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
    /// echo | connect | hold | subscribe | publish.
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
    /// Hub topics, comma-separated (at most 64): subscribe mode subscribes
    /// to them on a `/hub` URL; publish mode publishes to them.
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
    /// Reconnect whenever a connection closes (honouring a 1013's "retry
    /// in N s" and a refused upgrade's Retry-After) and resubscribe with
    /// `since` from the last positions seen (subscribe), or go on
    /// publishing (publish).
    #[arg(long)]
    resume: bool,
    /// After a 1001 or a lost connection, wait a random 0..this before
    /// dialling again; failed dials back off from it, doubling up to 10 s.
    #[arg(long, default_value_t = 1000)]
    reconnect_delay_ms: u64,
    /// A client-side storm (with --resume): this long after every client
    /// is subscribed, each closes its socket at once...
    #[arg(long)]
    drop_after_ms: Option<u64>,
    /// ...stays away this long, then all dial again together.
    #[arg(long, default_value_t = 1000)]
    drop_for_ms: u64,
    /// Publish mode: messages per second to each topic, over all
    /// connections together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
}

/// Settings every load thread shares.
#[derive(Debug)]
pub(crate) struct Plan {
    mode: Mode,
    /// Connections over all threads.
    conns: usize,
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
    /// Hub topics (subscribe and publish modes); empty: not a hub run.
    topics: Vec<String>,
    resume: bool,
    reconnect_delay: Duration,
    /// When the client-side storm starts, from the moment all are live.
    drop_after: Option<Duration>,
    drop_for: Duration,
    /// Publishes per second to each topic, all connections together.
    rate: f64,
}

impl Plan {
    /// Connections speak the hub's JSON protocol.
    fn hub(&self) -> bool {
        !self.topics.is_empty()
    }
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
        self.check_hub()?;
        Ok(Plan {
            mode: self.mode,
            conns: self.conns,
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
            topics: self.topics.clone(),
            resume: self.resume,
            reconnect_delay: Duration::from_millis(self.reconnect_delay_ms),
            drop_after: self.drop_after_ms.map(Duration::from_millis),
            drop_for: Duration::from_millis(self.drop_for_ms),
            rate: self.rate,
        })
    }

    fn check_hub(&self) -> Result<(), String> {
        let hub_mode = matches!(self.mode, Mode::Subscribe | Mode::Publish);
        if !self.topics.is_empty() && !hub_mode {
            return Err("--topics is for subscribe and publish modes".into());
        }
        if self.topics.len() > 64 || self.topics.iter().any(|t| t.is_empty() || t.len() > 128) {
            return Err("--topics: 1 to 64 topics of 1-128 bytes each".into());
        }
        if self.mode == Mode::Publish && self.topics.is_empty() {
            return Err("publish mode needs --topics".into());
        }
        if self.resume && self.topics.is_empty() {
            return Err("--resume needs --topics".into());
        }
        if self.drop_after_ms.is_some() && !(self.resume && self.mode == Mode::Subscribe) {
            return Err("--drop-after-ms is for subscribe --resume".into());
        }
        if self.mode == Mode::Publish && !(self.rate > 0.0 && self.rate <= 1e7) {
            return Err("--rate must be in (0, 10000000] messages per second".into());
        }
        Ok(())
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Echo => "echo",
        Mode::Connect => "connect",
        Mode::Hold => "hold",
        Mode::Subscribe => "subscribe",
        Mode::Publish => "publish",
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
    let mut total = Report::new(plan.hub());
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
        let mut all_live_reported = false;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            let sum = |f: fn(&Progress) -> u64| progress.iter().map(f).sum::<u64>();
            let open = sum(|p| p.open.load(Ordering::Relaxed));
            if !all_open_reported && open as usize >= args.conns {
                all_open_reported = true;
                eprintln!(
                    "all {open} connections open after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            }
            let live = sum(|p| p.live.load(Ordering::Relaxed));
            // Said again each time all are back after some were lost, so a
            // benchmark can time a storm from these lines.
            if live < args.conns as u64 {
                all_live_reported = false;
            } else if plan.hub() && !all_live_reported {
                all_live_reported = true;
                eprintln!(
                    "all {live} clients live after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            }
            if last.elapsed() >= Duration::from_secs(1) {
                let messages = sum(|p| p.messages.load(Ordering::Relaxed));
                let rate = (messages - last_messages) as f64 / last.elapsed().as_secs_f64();
                let live = if plan.hub() {
                    format!(" live={live}")
                } else {
                    String::new()
                };
                eprintln!(
                    "t={:.0}s open={open}{live} msgs={messages} ({rate:.0}/s) handshakes={} errors={}",
                    started.elapsed().as_secs_f64(),
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
