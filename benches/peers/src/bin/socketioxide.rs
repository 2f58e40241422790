//! The Socket.IO side of the bench (benches/socketio.py) on socketioxide,
//! served by hyper on a current-thread runtime: one core, like one surge
//! shard. socketioxide's defaults otherwise (ping 25 s / 20 s, path
//! /socket.io/, polling and WebSocket).
//!
//! On "/": a connecting socket joins room "all"; `broadcast` (P) emits
//! `tick` (P) to room "all", the sender included; `message` (...) is answered
//! `message-back` with its first argument (socketioxide's `Data` extractor
//! takes one; the bench sends one).
//!
//! usage: socketioxide [PORT | --listen 127.0.0.1:PORT]

use std::net::SocketAddr;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use socketioxide::extract::{Data, SocketRef};
use socketioxide::SocketIo;

async fn on_connect(socket: SocketRef) {
    socket.join("all");
    socket.on("broadcast", async |io: SocketIo, Data::<Value>(payload)| {
        // Fails only when a socket's send buffer is full: that delivery is
        // dropped, which the bench counts as a loss.
        let _ = io.to("all").emit("tick", &payload).await;
    });
    socket.on("message", async |socket: SocketRef, Data::<Value>(arg)| {
        let _ = socket.emit("message-back", &arg);
    });
}

fn addr() -> SocketAddr {
    match std::env::args().nth(1).and_then(|a| a.parse::<u16>().ok()) {
        Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        None => surge_bench_peers::listen_addr(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (svc, io) = SocketIo::new_svc();
    io.ns("/", on_connect);
    let listener = tokio::net::TcpListener::bind(addr()).await.expect("bind");
    surge_bench_peers::ready("socketioxide", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
