//! The Socket.IO embedding API against the stock `socket.io-client` (in
//! Node, on WebSocket and long-polling): servers started in-process with
//! `App::socketio`, on two shards and both drivers, serving the
//! `socketio_chat` example's namespaces and a test namespace `/fan`
//! (handshake headers, broadcasts to several rooms with exceptions, a
//! server-side disconnect, a handler's panic). Also the config-file route
//! that names registered namespaces, and its refusals.

mod support;

#[path = "../examples/socketio_chat.rs"]
#[allow(dead_code, unreachable_pub)]
mod chat;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use support::socketio::node_scenarios;
use support::{metric, wait_metric};
use surge::app::{
    Ack, App, Backend, Connect, ConnectRequest, Event, Namespaces, Running, Socket, SocketIoHandler,
};

const BACKENDS: [Backend; 2] = [Backend::Epoll, Backend::Uring];

/// The test's namespace: what the chat example does not show.
struct Fan;

#[derive(Deserialize)]
struct Fanout {
    to: Vec<String>,
    except: Vec<String>,
    text: String,
}

impl SocketIoHandler for Fan {
    fn connect(&self, request: &ConnectRequest<'_>) -> Connect {
        match request.handshake().header("x-team") {
            Some(team) => Connect::accept().data(String::from_utf8_lossy(team).into_owned()),
            None => Connect::refuse("no team"),
        }
    }

    fn event(&self, socket: &mut Socket<'_>, event: &Event<'_>, ack: Option<Ack>) {
        let answer = match event.name() {
            "team" => json!({
                "team": socket.data::<String>(),
                "eio": socket.handshake().query_param("EIO"),
            }),
            "join" => {
                for room in event.first::<Vec<String>>().unwrap_or_default() {
                    socket.join(&room);
                }
                json!(socket.rooms())
            }
            "fanout" => {
                let Some(f) = event.first::<Fanout>() else {
                    return;
                };
                let mut b = socket.broadcast();
                for room in &f.to {
                    b = b.to(room);
                }
                for room in &f.except {
                    b = b.except(room);
                }
                json!(b.emit("fan", &f.text))
            }
            "bye" => {
                socket.disconnect();
                json!(true)
            }
            "panic" => panic!("a handler's bug"),
            _ => return,
        };
        if let Some(ack) = ack {
            let _ = ack.send(socket, &answer);
        }
    }
}

fn namespaces() -> (Namespaces, Arc<std::sync::OnceLock<surge::app::Emitter>>) {
    let admin = chat::Admin::default();
    let emitter = Arc::clone(&admin.emitter);
    (chat::namespaces(admin).namespace("/fan", Fan), emitter)
}

fn start(app: App, backend: Backend) -> Running {
    app.listen("127.0.0.1:0".parse().unwrap())
        .backend(backend)
        .shards(2)
        .start()
        .expect("start")
}

/// The chat example and `/fan` with the stock client, on two shards (a
/// room's members and a broadcast's sender land on both) and each driver;
/// nothing is held once the clients have gone.
#[test]
fn the_stock_client_drives_an_app_on_two_shards_and_both_drivers() {
    for backend in BACKENDS {
        let (namespaces, admin_emitter) = namespaces();
        let running = start(App::new().socketio("/socket.io/", namespaces), backend);
        let emitter = running.emitter("/socket.io/").expect("a Socket.IO route");
        assert!(running.emitter("/elsewhere").is_none());
        let _ = admin_emitter.set(emitter.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let clock = chat::clock(emitter, Duration::from_millis(100), Arc::clone(&stop));
        let addr = running.local_addrs()[0];
        node_scenarios(
            &format!("http://{addr}"),
            &["app_chat", "app_admin", "app_fan"],
            &[],
            &format!("{backend:?}"),
        );
        wait_metric(addr, "surge_engineio_sessions", |n| n == 0);
        wait_metric(addr, "surge_socketio_sockets", |n| n == 0);
        assert!(metric(addr, "surge_socketio_connects_refused_total") >= 2);
        stop.store(true, Ordering::Relaxed);
        clock.join().unwrap();
        drop(running);
    }
}

fn config_file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("surge-sio-app-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A config-file route of kind `socketio` serves the namespaces registered
/// under its `handler` name, with its own keys; a name nobody registered
/// is refused at start, naming the route.
#[test]
fn a_config_file_route_names_registered_namespaces() {
    let file = config_file(
        "listen = [\"127.0.0.1:0\"]\nshards = 1\n\n[[routes]]\npath = \"/rt/\"\n\
         kind = \"socketio\"\nhandler = \"chat\"\nping-interval-ms = 1234\n",
    );
    let (namespaces, _) = namespaces();
    let running = App::config_file(&file)
        .unwrap()
        .socketio_handler("chat", namespaces)
        .start()
        .expect("start");
    let addr = running.local_addrs()[0];
    let (status, _, body) = support::http_get(addr, "/rt/?EIO=4&transport=polling");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pingInterval\":1234"), "{body}");
    drop(running);
    let refused = App::config_file(&file).unwrap().start().unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("route \"/rt/\" names Socket.IO handler \"chat\""),
        "{refused}"
    );
}
