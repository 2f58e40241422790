//! A real redis-server for the tests, started on a free loopback port
//! without persistence, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub(crate) struct Redis {
    child: Child,
}

impl Redis {
    pub(crate) fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `bash scripts/test.sh`, which installs it");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut child = child;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whoever answered must be this redis-server, not one that already
        // held the port (this one would then have exited).
        std::thread::sleep(Duration::from_millis(50));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("redis-server on port {port} exited ({status}): is the port taken?");
        }
        Self { child }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the redis-server.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for a redis-server, never one handed to another test in
/// this process, and below the kernel's ephemeral range (32768 and up by
/// default): every surge server in the tests listens on port 0, and one
/// given the port a redis-server is about to bind would pass for it.
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    // Spread by process so that test binaries run one after another do
    // not all start at the same port.
    let start = 20_000 + (std::process::id() % 1000) as u16 * 10;
    (start..32_000)
        .chain(20_000..start)
        .find(|&port| !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok())
        .inspect(|&port| given.push(port))
        .expect("a free port under 32000 for redis-server")
}
