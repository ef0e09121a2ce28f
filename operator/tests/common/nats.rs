//! A real `nats-server` (from PATH, `scripts/setup`) on a free loopback port with its own
//! directory, stopped and cleaned up when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) struct Server {
    child: Child,
    /// Client URL.
    pub(crate) url: String,
    /// The server's directory (store, config files).
    pub(crate) dir: PathBuf,
}

impl Server {
    /// Start nats-server with the arguments `args` gives for its directory and port, and wait
    /// (bounded) until it listens.
    pub(crate) async fn start(args: impl FnOnce(&Path, u16) -> Vec<String>) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("baton-operator-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("nats-server")
            .args(args(&dir, port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (scripts/setup)");
        let server = Server {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not listen on {port}");
    }

    /// The server's process id (to signal it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
