//! A Rust client that negotiates permessage-deflate against `surge echo`
//! and the hub of `surge serve`, on both drivers. tungstenite has no
//! deflate support, so the client is yawc; soketto 0.8 was tried first but
//! its inflater requires a final DEFLATE block, which RFC 7692 senders
//! need not (and with context takeover must not) send. The bytes the client
//! reads off the socket prove that the server really compressed.

mod support;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::Server;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use yawc::{CompressionLevel, Frame, OpCode, Options, WebSocket};

/// A TCP stream that counts the bytes it reads.
struct Counted {
    stream: TcpStream,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n, Ordering::Relaxed);
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

async fn open(
    server: &Server,
    path: &str,
    window: Option<u8>,
) -> (WebSocket<Counted>, Arc<AtomicUsize>) {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        stream,
        read: read.clone(),
    };
    let mut options = Options::default()
        .with_compression_level(CompressionLevel::default())
        .with_utf8();
    if let Some(bits) = window {
        options = options.with_server_max_window_bits(bits);
    }
    let url = format!("ws://{}{path}", server.addr).parse().unwrap();
    let ws = WebSocket::handshake(url, counted, options).await.unwrap();
    (ws, read)
}

async fn next(ws: &mut WebSocket<Counted>) -> Frame {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no answer within 10 s")
        .expect("connection ended")
}

/// A 60 KiB text that compresses well, as JSON feeds do.
fn compressible() -> String {
    (0..2000)
        .map(|i| format!("{{\"seq\":{i:05},\"px\":101.25}}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn yawc_echoes_compressed_messages() {
    for backend in ["epoll", "uring"] {
        let server = Server::start(&["echo", "--backend", backend]);
        for window in [None, Some(10)] {
            runtime().block_on(async {
                let (mut ws, read) = open(&server, "/", window).await;
                let text = compressible();
                for round in 0..3 {
                    let before = read.load(Ordering::Relaxed);
                    ws.send(Frame::text(text.clone())).await.unwrap();
                    let echo = next(&mut ws).await;
                    assert_eq!(echo.opcode(), OpCode::Text);
                    assert_eq!(echo.as_str(), text, "{backend} {window:?} round {round}");
                    let wire = read.load(Ordering::Relaxed) - before;
                    assert!(
                        wire * 5 < text.len(),
                        "{backend} {window:?}: {wire} bytes on the wire for {}",
                        text.len()
                    );
                }
                let bytes = vec![0xA5u8; 10_000];
                ws.send(Frame::binary(bytes.clone())).await.unwrap();
                ws.send(Frame::text("hi")).await.unwrap();
                let echo = next(&mut ws).await;
                assert_eq!(echo.opcode(), OpCode::Binary);
                assert_eq!(&echo.payload()[..], &bytes[..]);
                assert_eq!(next(&mut ws).await.as_str(), "hi");
                let _ = ws.close().await;
            });
        }
    }
}

#[test]
fn yawc_reads_a_compressed_hub_broadcast() {
    for backend in ["epoll", "uring"] {
        // The broadcast is about 50 KB, over the default --max-publish.
        let server = Server::start(&["serve", "--backend", backend, "--max-publish", "65536"]);
        runtime().block_on(async {
            let (mut ws, read) = open(&server, "/hub", None).await;
            ws.send(Frame::text(r#"{"op":"subscribe","topics":["prices"]}"#))
                .await
                .unwrap();
            assert!(next(&mut ws).await.as_str().contains("subscribed"));
            let data = compressible();
            let publish =
                serde_json::json!({"op":"publish","topic":"prices","data":data}).to_string();
            let before = read.load(Ordering::Relaxed);
            ws.send(Frame::text(publish)).await.unwrap();
            let got = next(&mut ws).await;
            let wire = read.load(Ordering::Relaxed) - before;
            let message: serde_json::Value = serde_json::from_str(got.as_str()).unwrap();
            assert_eq!(message["data"].as_str(), Some(data.as_str()), "{backend}");
            assert!(
                wire * 5 < got.payload().len(),
                "{backend}: {wire} bytes for {}",
                got.payload().len()
            );
        });
    }
}
