//! fastwebsockets echo server on a current-thread tokio runtime (one core,
//! like one surge shard).

use bytes::Bytes;
use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn upgrade_handler(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = echo(fut).await;
    });
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = surge_bench_peers::listen_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    surge_bench_peers::ready("fastwebsockets", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(upgrade_handler))
                .with_upgrades();
            let _ = conn.await;
        });
    }
}
