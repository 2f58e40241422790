//! A price ticker on the embedding API: a plain thread publishes prices
//! through a `Publisher`; clients subscribe to the symbols they want.
//!
//! ```text
//! cargo run --example ticker -- 127.0.0.1:9001
//! websocat 'ws://127.0.0.1:9001/prices?symbols=AAPL,MSFT'
//! ```
//!
//! Each price is one text message, `SYMBOL PRICE`. A client may also send
//! `+SYMBOL` or `-SYMBOL` to subscribe or unsubscribe later. An unknown
//! symbol in the URL is refused with HTTP 404, in a command it gets an
//! `error:` reply.

use std::time::Duration;

use surge::app::{App, Handler, Limits, Message, Publisher, Upgrade, UpgradeRequest, Ws};
use surge::pubsub::Backpressure;

/// The symbols on offer.
pub const SYMBOLS: [&str; 4] = ["AAPL", "MSFT", "GOOG", "AMZN"];

/// The prices route.
#[derive(Debug)]
pub struct Prices;

/// The symbols a client asked for in its URL.
struct Wanted(Vec<&'static str>);

fn symbol(name: &str) -> Option<&'static str> {
    SYMBOLS.iter().copied().find(|s| *s == name)
}

/// The topic a symbol's prices go to.
pub fn topic(symbol: &str) -> String {
    format!("price:{symbol}")
}

impl Handler for Prices {
    fn limits(&self) -> Limits {
        Limits {
            max_message: 64,
            max_backpressure: 64 << 10,
            // A late price is worth nothing: a slow client gets the latest.
            backpressure: Backpressure::Conflate,
            ..Limits::default()
        }
    }

    fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let mut wanted = Vec::new();
        for name in req.query_param("symbols").unwrap_or("").split(',') {
            match symbol(name) {
                Some(s) => wanted.push(s),
                None if name.is_empty() => {}
                None => return Upgrade::reject(404),
            }
        }
        Upgrade::accept().data(Wanted(wanted))
    }

    fn open(&self, ws: &mut Ws<'_>) {
        let wanted = ws.data::<Wanted>().map(|w| w.0.clone()).unwrap_or_default();
        for s in wanted {
            ws.subscribe(&topic(s));
        }
    }

    fn message(&self, ws: &mut Ws<'_>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            ws.close(1003, "text only");
            return;
        };
        let (on, name) = match text.split_at_checked(1) {
            Some(("+", name)) => (true, name),
            Some(("-", name)) => (false, name),
            _ => {
                ws.send_text("error: send +SYMBOL or -SYMBOL");
                return;
            }
        };
        match symbol(name) {
            Some(s) if on => {
                ws.subscribe(&topic(s));
            }
            Some(s) => {
                ws.unsubscribe(&topic(s));
            }
            None => {
                ws.send_text(&format!("error: no symbol {name}"));
            }
        }
    }
}

/// Publishes a random walk of every symbol's price, `rate` times a second,
/// until the process ends.
pub fn feed(publisher: Publisher, rate: u32) {
    let mut prices: Vec<f64> = (0..SYMBOLS.len())
        .map(|i| 100.0 + 50.0 * i as f64)
        .collect();
    // A small xorshift: the example needs motion, not randomness.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let period = Duration::from_secs(1) / rate.max(1);
    loop {
        for (price, name) in prices.iter_mut().zip(SYMBOLS) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let step = (seed % 201) as f64 / 100.0 - 1.0;
            *price = (*price + step).max(1.0);
            publisher.publish_text(&topic(name), &format!("{name} {price:.2}"));
        }
        std::thread::sleep(period);
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let addr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let running = App::new().listen(addr).route("/prices", Prices).start()?;
    let publisher = running.publisher();
    std::thread::Builder::new()
        .name("price-feed".into())
        .spawn(move || feed(publisher, 10))?;
    running.announce();
    running.join()
}
