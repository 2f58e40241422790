//! The synthetic market feed: N symbols, each ticking a given number of
//! times a second. A tick is one text message, `SYMBOL SEQ SEND_TS_US
//! PRICE` (about 32 bytes), published to `ticker/SYMBOL` and to `ticker`
//! (every symbol), with the symbol as the conflation key. With a
//! `socketio` route, each tick also goes to the Socket.IO room named by
//! its symbol, as the event `["publish", SYMBOL, "<tick>"]`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::hub::{Delivery, Hub};
use crate::admission::jitter::Jitter;
use crate::protocol::frame::OpCode;

pub use crate::config::pubsub::symbols;

/// The topic every tick goes to.
pub const ALL: &str = "ticker";

/// The topic of one symbol.
pub fn topic(symbol: &str) -> String {
    format!("{ALL}/{symbol}")
}

/// Microseconds since the Unix epoch: the clock the load generator reads.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs the feed on its own thread for as long as the process lives.
pub fn spawn(
    hub: Arc<Hub>,
    symbols: Vec<String>,
    rate_hz: f64,
    socketio: bool,
) -> std::io::Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate_hz.max(0.001));
    std::thread::Builder::new()
        .name("surge-ticker".into())
        .spawn(move || run(&hub, &symbols, period, socketio))?;
    Ok(())
}

/// The Socket.IO room (on namespace `/`) a symbol's ticks go to.
pub fn socketio_room(symbol: &str) -> String {
    format!("{}/,{symbol}", crate::socketio::ROOM_TOPIC_PREFIX)
}

fn run(hub: &Hub, symbols: &[String], period: Duration, socketio: bool) {
    let topics: Vec<(Arc<str>, Arc<str>)> = symbols
        .iter()
        .map(|s| (Arc::from(s.as_str()), Arc::from(topic(s).as_str())))
        .collect();
    let rooms: Vec<Arc<str>> = symbols
        .iter()
        .map(|s| Arc::from(socketio_room(s).as_str()))
        .collect();
    let mut event = String::with_capacity(96);
    let all: Arc<str> = ALL.into();
    let mut seq = vec![0u64; symbols.len()];
    let mut price: Vec<f64> = (0..symbols.len()).map(|i| 100.0 + i as f64).collect();
    let mut jitter = Jitter::new(7);
    let mut batch = Vec::with_capacity(symbols.len() * 2);
    let mut text = String::with_capacity(64);
    let mut next = Instant::now();
    loop {
        let ts = now_us();
        batch.clear();
        for (i, (symbol, topic)) in topics.iter().enumerate() {
            seq[i] += 1;
            // A random walk of a cent either way.
            price[i] = (price[i] + (jitter.below(3) as f64 - 1.0) * 0.01).max(0.01);
            text.clear();
            use std::fmt::Write;
            let _ = write!(text, "{symbol} {} {ts} {:.2}", seq[i], price[i]);
            let frame = Hub::frame(OpCode::Text, text.as_bytes());
            let key = i as u32;
            batch.push(Delivery {
                topic: Arc::clone(topic),
                key,
                frame: Arc::clone(&frame),
            });
            batch.push(Delivery {
                topic: Arc::clone(&all),
                key,
                frame,
            });
            if socketio {
                event.clear();
                let symbol_json = serde_json::to_string(&**symbol).expect("a string");
                let tick_json = serde_json::to_string(&text).expect("a string");
                let _ = write!(event, "42[\"publish\",{symbol_json},{tick_json}]");
                batch.push(Delivery {
                    topic: Arc::clone(&rooms[i]),
                    key,
                    frame: Hub::frame(OpCode::Text, event.as_bytes()),
                });
            }
        }
        hub.publish_batch(&batch);
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * 100 {
            // Fell far behind (a stalled machine): skip ahead rather than
            // bursting the backlog.
            next = now;
        }
    }
}
