//! The embedding API against real sockets and a real client (tungstenite):
//! servers started in-process with `App::start`, on both drivers. Covers
//! the chat example's handler, every refusal an App route can give
//! (upgrade statuses, 1003, 1009, 1011, handler closes), per-connection
//! data, backpressure and drain, per-route idle timeouts, publishing from
//! another thread to subscribers on every shard, and in-process shutdown.

mod support;

#[path = "../examples/chat.rs"]
#[allow(dead_code, unreachable_pub)]
mod chat;

#[path = "../examples/ticker.rs"]
#[allow(dead_code, unreachable_pub)]
mod ticker;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{connect, connect_from, read_close, read_response_head, upgrade_request, Patient};
use surge::app::{
    App, Backend, Config, Handler, Limits, Message as AppMessage, Running, SendStatus, Upgrade,
    UpgradeRequest, Ws as AppWs,
};
use tungstenite::{Message, WebSocket};

const BACKENDS: [Backend; 2] = [Backend::Epoll, Backend::Uring];

type Ws = WebSocket<Patient>;

fn start(backend: Backend, shards: usize, app: App) -> Running {
    app.listen("127.0.0.1:0".parse().unwrap())
        .backend(backend)
        .shards(shards)
        .start()
        .expect("start")
}

fn addr(running: &Running) -> SocketAddr {
    running.local_addrs()[0]
}

/// A tungstenite client on `path`, from source address 127.0.0.`from`.
fn client_from(from: u8, addr: SocketAddr, path: &str) -> Ws {
    let stream = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, from)), addr);
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tungstenite::client(url.as_str(), Patient(stream)).expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

fn client(addr: SocketAddr, path: &str) -> Ws {
    client_from(1, addr, path)
}

/// Reads the next message. Nothing retries EINTR here: starting a server
/// must not leave the starting thread's socket calls interrupted.
fn read(ws: &mut Ws) -> Message {
    ws.read().expect("read")
}

fn text(ws: &mut Ws) -> String {
    loop {
        match read(ws) {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads until a close frame; returns its code.
/// Reads until a close frame and answers it; returns its code.
fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                // tungstenite queues its answer until the next write.
                let _ = ws.flush();
                return frame.map_or(1005, |f| u16::from(f.code));
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

fn say(ws: &mut Ws, s: &str) {
    ws.send(Message::text(s)).expect("send");
}

/// The status a raw upgrade request of `path` (with `extra` headers) gets.
fn status(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let mut s = connect(addr);
    s.write_all(upgrade_request(path, extra).as_bytes())
        .unwrap();
    read_response_head(&mut s)
}

#[test]
fn chat_rooms_see_their_own_messages_only() {
    for backend in BACKENDS {
        let server = start(backend, 2, App::new().route("/chat", chat::Chat::default()));
        let addr = addr(&server);
        let mut ada = client_from(2, addr, "/chat?room=x&name=ada");
        assert_eq!(text(&mut ada), "* ada joined x");
        let mut bob = client_from(3, addr, "/chat?room=x&name=bob");
        assert_eq!(text(&mut ada), "* bob joined x");
        assert_eq!(text(&mut bob), "* bob joined x");
        let mut cy = client_from(4, addr, "/chat?room=y&name=cy");
        assert_eq!(text(&mut cy), "* cy joined y");

        say(&mut ada, "hello");
        assert_eq!(text(&mut ada), "ada: hello");
        assert_eq!(text(&mut bob), "ada: hello");
        say(&mut cy, "hi");
        assert_eq!(text(&mut cy), "cy: hi");
        // Had cy's line leaked into room x it would come before this.
        bob.close(None).unwrap();
        assert_eq!(text(&mut ada), "* bob left x", "{backend:?}");

        // A join message moves a client; a guest gets a generated name.
        say(&mut cy, "/join x");
        assert_eq!(text(&mut cy), "* cy joined x");
        assert_eq!(text(&mut ada), "* cy joined x");
        say(&mut cy, "/nick cyd");
        assert_eq!(text(&mut ada), "* cy is now cyd");
        say(&mut cy, "here");
        assert_eq!(text(&mut ada), "cyd: here");
        let mut guest = client_from(5, addr, "/chat");
        say(&mut guest, "anyone?");
        assert_eq!(text(&mut guest), "error: join a room first: /join ROOM");
        say(&mut guest, "/join bad room");
        assert!(text(&mut guest).starts_with("error: room names"));
        say(&mut guest, "/join x");
        let joined = text(&mut ada);
        assert!(
            joined.starts_with("* guest") && joined.ends_with(" joined x"),
            "{joined}"
        );
        // A dropped transport still says goodbye (close code 1006 inside).
        drop(guest);
        let left = text(&mut ada);
        assert!(
            left.starts_with("* guest") && left.ends_with(" left x"),
            "{left}"
        );
    }
}

#[test]
fn chat_refuses_bad_names_and_binary() {
    for backend in BACKENDS {
        let server = start(backend, 1, App::new().route("/chat", chat::Chat::default()));
        let addr = addr(&server);
        for path in [
            "/chat?room=a%20b",
            "/chat?room=",
            "/chat?name=x&room=000000000000000000000000000000000",
        ] {
            assert_eq!(status(addr, path, "").0, 400, "{path}");
        }
        let mut ws = client(addr, "/chat?room=r");
        text(&mut ws);
        ws.send(Message::binary(vec![1, 2, 3])).unwrap();
        assert_eq!(close_code(&mut ws), 1003);
        // Over the route's 4 KiB: 1009.
        let mut ws = client(addr, "/chat?room=r");
        text(&mut ws);
        ws.send(Message::text("x".repeat(4097))).unwrap();
        assert_eq!(close_code(&mut ws), 1009);
    }
}

/// A route that answers upgrades from the query: `status=N` refuses with N,
/// `proto=P` picks subprotocol P, `panic` panics; otherwise it accepts.
struct Gate;

impl Handler for Gate {
    fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        if req.query_param("panic").is_some() {
            panic!("upgrade handler panics on purpose");
        }
        if let Some(status) = req.query_param("status").and_then(|s| s.parse().ok()) {
            return Upgrade::reject(status);
        }
        match req.query_param("proto") {
            Some(p) => Upgrade::accept().protocol(p),
            None => Upgrade::accept(),
        }
    }
}

#[test]
fn upgrade_hook_answers_with_its_status() {
    for backend in BACKENDS {
        let server = start(backend, 1, App::new().route("/gate", Gate));
        let addr = addr(&server);
        for (path, extra, want) in [
            ("/gate?status=401", "", 401),
            ("/gate?status=429", "", 429),
            ("/gate?status=503", "", 503),
            // Not an error status: a refusal must still read as one.
            ("/gate?status=200", "", 403),
            ("/gate?status=101", "", 403),
            // A subprotocol the client did not offer is a handler bug.
            ("/gate?proto=v2", "Sec-WebSocket-Protocol: v1\r\n", 500),
            ("/gate?panic", "", 500),
            // Only routes added are served; the built-in ones are off.
            ("/other", "", 404),
            ("/hub", "", 404),
            ("/ticker", "", 404),
            ("/gate/", "", 404),
        ] {
            let (got, head) = status(addr, path, extra);
            assert_eq!(got, want, "{path} {backend:?}: {head}");
        }
        let (got, head) = status(addr, "/gate?proto=v2", "Sec-WebSocket-Protocol: v1, v2\r\n");
        assert_eq!(got, 101);
        assert!(head.contains("Sec-WebSocket-Protocol: v2\r\n"), "{head}");
        // Refusals are counted under the hook's reason.
        assert!(support::metric(addr, "surge_admission_rejected_total") >= 7);
        // The server still serves after the panic.
        let (got, _) = status(addr, "/gate", "");
        assert_eq!(got, 101);
    }
}

/// Counts each connection's messages in its own data; closes with what it
/// is told; panics on demand; reports closes on a channel.
struct Counter {
    closes: Mutex<Sender<(u16, String)>>,
}

impl Counter {
    fn new() -> (Self, Receiver<(u16, String)>) {
        let (tx, rx) = mpsc::channel();
        (
            Self {
                closes: Mutex::new(tx),
            },
            rx,
        )
    }
}

impl Handler for Counter {
    fn limits(&self) -> Limits {
        Limits {
            max_message: 1024,
            ..Limits::default()
        }
    }

    fn upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let start: u32 = req
            .query_param("start")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Upgrade::accept().data(start)
    }

    fn open(&self, ws: &mut AppWs<'_>) {
        if ws.data::<u32>() == Some(&mut 99) {
            ws.close(4099, "not today");
        }
    }

    fn message(&self, ws: &mut AppWs<'_>, msg: AppMessage<'_>) {
        match msg {
            AppMessage::Text("panic") => panic!("message handler panics on purpose"),
            AppMessage::Text("bye") => ws.close(4000, "bye"),
            AppMessage::Text("bad code") => ws.close(1005, "no"),
            AppMessage::Text(_) => {
                let n = ws.data::<u32>().expect("data");
                *n += 1;
                let reply = n.to_string();
                assert_eq!(ws.send_text(&reply), SendStatus::Sent);
            }
            AppMessage::Binary(b) => {
                ws.send_binary(b);
            }
        }
    }

    fn close(&self, ws: &mut AppWs<'_>, code: u16, reason: &str) {
        assert!(!ws.is_open());
        assert_eq!(ws.send_text("too late"), SendStatus::Closed);
        let _ = self.closes.lock().unwrap().send((code, reason.to_owned()));
    }
}

fn next_close(rx: &Receiver<(u16, String)>) -> u16 {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("close handler")
        .0
}

#[test]
fn data_limits_panics_and_closes() {
    for backend in BACKENDS {
        let (handler, closes) = Counter::new();
        let server = start(backend, 1, App::new().route("/count", handler));
        let addr = addr(&server);

        // Per-connection data: each connection counts on its own.
        let mut a = client(addr, "/count?start=10");
        let mut b = client(addr, "/count");
        for want in ["11", "12"] {
            say(&mut a, "x");
            assert_eq!(text(&mut a), want);
        }
        say(&mut b, "x");
        assert_eq!(text(&mut b), "1");
        // Exactly the limit passes; one more byte is 1009.
        b.send(Message::binary(vec![7; 1024])).unwrap();
        assert_eq!(read(&mut b), Message::binary(vec![7; 1024]));
        b.send(Message::binary(vec![7; 1025])).unwrap();
        assert_eq!(close_code(&mut b), 1009);
        assert_eq!(next_close(&closes), 1009);

        // A panic closes that connection with 1011 and nothing else.
        say(&mut a, "panic");
        assert_eq!(close_code(&mut a), 1011, "{backend:?}");
        assert_eq!(next_close(&closes), 1011);
        let mut c = client(addr, "/count");
        say(&mut c, "x");
        assert_eq!(text(&mut c), "1");

        // The handler's own close code, and an unsendable one replaced.
        say(&mut c, "bye");
        assert_eq!(close_code(&mut c), 4000);
        assert_eq!(next_close(&closes), 4000);
        let mut d = client(addr, "/count");
        say(&mut d, "bad code");
        assert_eq!(close_code(&mut d), 1011);
        assert_eq!(next_close(&closes), 1011);
        // Closing in open: the client reads the close right after the 101.
        let mut e = client(addr, "/count?start=99");
        assert_eq!(close_code(&mut e), 4099);
        assert_eq!(next_close(&closes), 4099);
        // The peer's close code reaches the handler.
        let mut f = client(addr, "/count");
        f.close(Some(tungstenite::protocol::CloseFrame {
            code: 4321.into(),
            reason: "done".into(),
        }))
        .unwrap();
        assert_eq!(
            closes.recv_timeout(Duration::from_secs(5)).unwrap(),
            (4321, "done".to_owned())
        );
        // A bad frame: the protocol's code.
        let mut raw = connect(addr);
        raw.write_all(upgrade_request("/count", "").as_bytes())
            .unwrap();
        assert_eq!(read_response_head(&mut raw).0, 101);
        raw.write_all(&support::frame(0x83, b"reserved opcode"))
            .unwrap();
        assert_eq!(read_close(&mut raw), Some(1002));
        assert_eq!(next_close(&closes), 1002);
    }
}

/// Floods on request; reports the send statuses when drained.
struct Flood;

impl Handler for Flood {
    fn limits(&self) -> Limits {
        Limits {
            max_backpressure: 64 << 10,
            ..Limits::default()
        }
    }

    fn upgrade(&self, _req: &UpgradeRequest<'_>) -> Upgrade {
        Upgrade::accept().data(Vec::<SendStatus>::new())
    }

    fn message(&self, ws: &mut AppWs<'_>, _msg: AppMessage<'_>) {
        let chunk = vec![0u8; 16 << 10];
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(ws.send_binary(&chunk));
        }
        assert!(ws.buffered() > 64 << 10);
        *ws.data::<Vec<SendStatus>>().unwrap() = statuses;
    }

    fn drain(&self, ws: &mut AppWs<'_>) {
        let statuses = std::mem::take(ws.data::<Vec<SendStatus>>().unwrap());
        ws.send_text(&format!("drained {statuses:?}"));
    }
}

#[test]
fn drain_follows_backpressure() {
    for backend in BACKENDS {
        let server = start(backend, 1, App::new().route("/flood", Flood));
        let mut ws = client(addr(&server), "/flood");
        say(&mut ws, "go");
        for _ in 0..4 {
            assert!(matches!(read(&mut ws), Message::Binary(b) if b.len() == 16 << 10));
        }
        assert_eq!(
            text(&mut ws),
            "drained [Sent, Sent, Sent, Backpressure, Dropped, Dropped]",
            "{backend:?}"
        );
    }
}

/// Subscribes every connection to "news" and says so.
struct News;

impl Handler for News {
    fn limits(&self) -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        }
    }

    fn open(&self, ws: &mut AppWs<'_>) {
        assert!(ws.subscribe("news"));
        ws.send_text("ready");
    }

    fn message(&self, ws: &mut AppWs<'_>, msg: AppMessage<'_>) {
        // Echo through the topic: every subscriber, this one included.
        ws.publish("news", msg);
    }
}

#[test]
fn publisher_reaches_subscribers_on_every_shard() {
    for backend in BACKENDS {
        let server = start(backend, 2, App::new().route("/news", News));
        let addr = addr(&server);
        let mut clients: Vec<Ws> = (0..16)
            .map(|i| client_from(2 + i % 8, addr, "/news"))
            .collect();
        for ws in &mut clients {
            assert_eq!(text(ws), "ready");
        }
        let publisher = server.publisher();
        std::thread::spawn(move || {
            publisher.publish_text("news", "flash");
            publisher.publish_binary("news", &[1, 2, 3]);
            publisher.publish_text("elsewhere", "nobody");
        })
        .join()
        .unwrap();
        for ws in &mut clients {
            assert_eq!(text(ws), "flash", "{backend:?}");
            assert_eq!(read(ws), Message::binary(vec![1, 2, 3]));
        }
        say(&mut clients[0], "from a client");
        for ws in &mut clients {
            assert_eq!(text(ws), "from a client");
        }
        // The route's 1 s idle timeout, not the server's 120 s.
        let started = Instant::now();
        assert_eq!(close_code(&mut clients[1]), 1001);
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}

#[test]
fn shutdown_closes_every_connection_with_1001() {
    for backend in BACKENDS {
        let config = Config {
            drain: Duration::from_millis(100),
            ..Config::default()
        };
        let (handler, closes) = Counter::new();
        let server = start(
            backend,
            2,
            App::new().config(config).route("/count", handler),
        );
        let addr = addr(&server);
        // Built-in routes come with a full config.
        let mut echo = client(addr, "/echo");
        let mut ws = client(addr, "/count");
        say(&mut echo, "e");
        assert_eq!(text(&mut echo), "e");
        server.shutdown();
        assert_eq!(close_code(&mut ws), 1001);
        assert_eq!(close_code(&mut echo), 1001);
        assert_eq!(next_close(&closes), 1001);
        server.join().expect("clean exit");
        assert!(
            TcpStream::connect(addr).is_err(),
            "{backend:?}: still listening"
        );
    }
}

#[test]
fn ticker_thread_publishes_to_chosen_symbols() {
    for backend in BACKENDS {
        let server = start(backend, 2, App::new().route("/prices", ticker::Prices));
        let addr = addr(&server);
        assert_eq!(status(addr, "/prices?symbols=AAPL,NOPE", "").0, 404);
        let mut ws = client(addr, "/prices?symbols=AAPL");
        // Published from a plain thread; it outlives the server harmlessly.
        let publisher = server.publisher();
        std::thread::spawn(move || ticker::feed(publisher, 100));
        for _ in 0..3 {
            let tick = text(&mut ws);
            let (symbol, price) = tick.split_once(' ').unwrap();
            assert_eq!(symbol, "AAPL", "{tick}");
            assert!(price.parse::<f64>().unwrap() >= 1.0, "{tick}");
        }
        say(&mut ws, "+MSFT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !text(&mut ws).starts_with("MSFT ") {
            assert!(Instant::now() < deadline, "no MSFT tick");
        }
        say(&mut ws, "+NOPE");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t = text(&mut ws);
            if t.starts_with("error:") {
                assert_eq!(t, "error: no symbol NOPE");
                break;
            }
            assert!(Instant::now() < deadline, "no error reply");
        }
        say(&mut ws, &"+".repeat(65));
        assert_eq!(close_code(&mut ws), 1009);
        let mut ws = client(addr, "/prices");
        ws.send(Message::binary(vec![0])).unwrap();
        assert_eq!(close_code(&mut ws), 1003);
    }
}

/// Subscribes to as many topics as asked, one per message, and says
/// whether each was taken.
struct Topics;

impl Handler for Topics {
    fn limits(&self) -> Limits {
        Limits {
            max_topics: 2,
            ..Limits::default()
        }
    }

    fn message(&self, ws: &mut AppWs<'_>, msg: AppMessage<'_>) {
        let AppMessage::Text(topic) = msg else {
            return;
        };
        let reply = match topic.strip_prefix('-') {
            Some(topic) => ws.unsubscribe(topic),
            None => ws.subscribe(topic),
        };
        ws.send_text(&reply.to_string());
    }
}

#[test]
fn topics_per_connection_are_capped() {
    for backend in BACKENDS {
        let server = start(backend, 1, App::new().route("/t", Topics));
        let mut ws = client(addr(&server), "/t");
        for (ask, want) in [
            ("a", "true"),
            ("a", "true"),
            ("b", "true"),
            ("c", "false"),
            ("-c", "false"),
            ("-a", "true"),
            ("c", "true"),
        ] {
            say(&mut ws, ask);
            assert_eq!(text(&mut ws), want, "{ask} {backend:?}");
        }
        server.publisher().publish_text("c", "on c");
        server.publisher().publish_text("a", "on a");
        server.publisher().publish_text("b", "on b");
        assert_eq!(text(&mut ws), "on c");
        assert_eq!(text(&mut ws), "on b");
    }
}

/// Subscribes to "big" at open, under a small backpressure bound; reports
/// closes.
struct Big {
    closes: Mutex<Sender<(u16, String)>>,
}

impl Handler for Big {
    fn limits(&self) -> Limits {
        Limits {
            max_backpressure: 64 << 10,
            ..Limits::default()
        }
    }

    fn open(&self, ws: &mut AppWs<'_>) {
        ws.subscribe("big");
        ws.send_text("ready");
    }

    fn close(&self, _ws: &mut AppWs<'_>, code: u16, reason: &str) {
        let _ = self.closes.lock().unwrap().send((code, reason.to_owned()));
    }
}

#[test]
fn a_subscriber_past_its_bound_is_closed_with_1013() {
    for backend in BACKENDS {
        let (tx, closes) = mpsc::channel();
        let handler = Big {
            closes: Mutex::new(tx),
        };
        let server = start(backend, 1, App::new().route("/big", handler));
        let addr = addr(&server);
        // Never reads, with a small window: the server sees it fall behind.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let url = format!("ws://{addr}/big");
        let (mut slow, _) = tungstenite::client(url.as_str(), Patient(stream)).unwrap();
        assert_eq!(text(&mut slow), "ready");
        let publisher = server.publisher();
        let chunk = "x".repeat(4096);
        let mut published = 0;
        let (code, reason) = loop {
            if let Ok(closed) = closes.try_recv() {
                break closed;
            }
            assert!(published < 64 << 20, "{backend:?}: still subscribed");
            for _ in 0..64 {
                publisher.publish_text("big", &chunk);
            }
            published += 64 * chunk.len();
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(code, 1013, "{backend:?}");
        assert!(reason.contains("retry in"), "{reason}");
        assert_eq!(close_code(&mut slow), 1013);
    }
}

/// Sends every text message back, upper-cased (so the answer is the
/// handler's, not a built-in echo's).
struct Shout;

impl Handler for Shout {
    fn message(&self, ws: &mut AppWs<'_>, msg: AppMessage<'_>) {
        if let AppMessage::Text(t) = msg {
            ws.send_text(&t.to_uppercase());
        }
    }
}

#[test]
fn a_config_file_routes_paths_to_named_handlers() {
    let dir = std::env::temp_dir().join(format!("surge-app-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:0\"]\n\
         [[routes]]\npath = \"/shout\"\nkind = \"app\"\nhandler = \"shout\"\nmax-message = 100\n\
         deflate = \"off\"\n\
         [[routes]]\npath = \"/plain\"\nkind = \"echo\"\n",
    )
    .unwrap();
    for backend in BACKENDS {
        let app = App::config_file(&file)
            .expect("config")
            .handler("shout", Shout);
        let server = start(backend, 1, app);
        let addr = addr(&server);
        let mut ws = client(addr, "/shout");
        say(&mut ws, "hello");
        assert_eq!(text(&mut ws), "HELLO");
        // The route's max-message overrides the handler's 64 KiB.
        say(&mut ws, &"x".repeat(101));
        assert_eq!(close_code(&mut ws), 1009);
        // The route's deflate policy applies to the app route too.
        let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
        let (code, head) = status(addr, "/shout", offer);
        assert_eq!(code, 101, "{head}");
        assert!(!head.contains("permessage-deflate"), "{head}");
        let (code, head) = status(addr, "/plain", offer);
        assert_eq!(code, 101, "{head}");
        assert!(head.contains("permessage-deflate"), "{head}");
        let mut plain = client(addr, "/plain");
        say(&mut plain, "hello");
        assert_eq!(text(&mut plain), "hello");
        // The table replaces the default paths.
        assert_eq!(status(addr, "/echo", "").0, 404);
        server.shutdown();
        server.join().unwrap();
    }
    let unregistered = App::config_file(&file).unwrap().start();
    let e = unregistered.expect_err("a route without its handler");
    assert!(
        e.to_string().contains(
            "route \"/shout\" names handler \"shout\", which App::handler did not register"
        ),
        "{e}"
    );
    std::fs::write(&file, "[[routes]]\npath = \"/x\"\nkind = \"app\"\n").unwrap();
    let e = App::config_file(&file).expect_err("no handler name");
    assert!(
        e.ends_with(":1: key `routes.handler`: missing (an app route names one)"),
        "{e}"
    );
}
