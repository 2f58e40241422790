//! The ticker of `surge ticker` served by tokio-websockets on a
//! current-thread runtime, fanned out with `tokio::sync::broadcast`: the
//! usual way to build a broadcast server with tokio. `--symbols N --rate HZ`
//! as for surge; `/ticker` gets every tick (`SYMBOL SEQ SEND_TS_US PRICE`).
//! A subscriber that lags behind the channel skips what it missed, which is
//! what surge's conflation does for a slow reader.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::SinkExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_websockets::{Message, ServerBuilder};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = surge_bench_peers::listen_addr();
    let symbols: usize = surge_bench_peers::arg("symbols", 32);
    let rate: f64 = surge_bench_peers::arg("rate", 1000.0);
    // About 64 ms of ticks at 32 x 1000/s: a subscriber further behind lags.
    let (tx, _) = broadcast::channel::<String>(2048);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    surge_bench_peers::ready("tokio-websockets-broadcast", listener.local_addr().unwrap());
    let ticks = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        loop {
            interval.tick().await;
            seq += 1;
            let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros();
            for s in 0..symbols {
                let price = 100.0 + s as f64 + (seq % 7) as f64 * 0.01;
                let _ = ticks.send(format!("S{s:04} {seq} {ts} {price:.2}"));
            }
        }
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let mut rx = tx.subscribe();
        tokio::spawn(async move {
            let Ok((_request, mut ws)) = ServerBuilder::new().accept(stream).await else {
                return;
            };
            loop {
                let first = match rx.recv().await {
                    Ok(text) => text,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                // Everything already waiting goes out with one flush.
                if ws.feed(Message::text(first)).await.is_err() {
                    return;
                }
                loop {
                    match rx.try_recv() {
                        Ok(text) => {
                            if ws.feed(Message::text(text)).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}
