//! A real Redis server for tests: Debian's `redis-server` on a free loopback port, without
//! persistence, killed when dropped. `.ci/run` installs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{Spawned, free_port};

/// A running `redis-server`.
pub struct Redis {
    pub port: u16,
    server: Option<Spawned>,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            server: None,
        };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: no shutdown handshake).
    pub fn kill(&mut self) {
        self.server = None;
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install Debian's redis-server package (.ci/run does)")
            });
        self.server = Some(Spawned { child });
        for _ in 0..200 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "redis-server did not answer on port {} within 5 s",
            self.port
        );
    }

    /// Whether the server answers PING (a raw RESP exchange, no client library).
    pub async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
        )
    }

    /// The number of keys the proxy wrote under `prefix`.
    pub async fn keys(&self, prefix: &str) -> usize {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("redis connect");
        s.write_all(format!("KEYS {prefix}*\r\n").as_bytes())
            .await
            .expect("redis write");
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
            .await
            .expect("redis answers")
            .expect("redis read");
        let reply = String::from_utf8_lossy(&buf[..n]);
        // `*N\r\n` then the keys.
        reply
            .strip_prefix('*')
            .and_then(|r| r.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected KEYS reply: {reply}"))
    }
}
