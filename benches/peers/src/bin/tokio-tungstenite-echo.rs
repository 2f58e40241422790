//! tokio-tungstenite echo server on a current-thread tokio runtime.

use futures_util::{SinkExt, StreamExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = surge_bench_peers::listen_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    surge_bench_peers::ready("tokio-tungstenite", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}
