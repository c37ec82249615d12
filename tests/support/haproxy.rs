//! Debian's `haproxy` running the shipped `deploy/haproxy/haproxy.cfg`, rewritten only where a
//! test must differ (loopback ports, a private stats socket, foreground, no privilege drop).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{Spawned, free_port};

/// One instance behind HAProxy: its listener and admin ports.
#[derive(Debug, Clone, Copy)]
pub struct Instance {
    pub port: u16,
    pub admin: u16,
}

/// A running HAProxy.
pub struct Haproxy {
    pub port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    _process: Spawned,
}

/// The shipped example config.
pub fn shipped_config() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy/haproxy.cfg");
    std::fs::read_to_string(path).expect("deploy/haproxy/haproxy.cfg")
}

impl Haproxy {
    /// HAProxy in front of `a` and `b`, started from the shipped config.
    pub async fn start(a: Instance, b: Instance) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let port = free_port();
        let mut cfg = shipped_config();
        for (from, to) in [
            ("    log /dev/log local0\n", String::new()),
            ("    user haproxy\n", String::new()),
            ("    group haproxy\n", String::new()),
            ("    daemon\n", String::new()),
            ("/run/haproxy/admin.sock", socket.display().to_string()),
            ("bind :443", format!("bind 127.0.0.1:{port}")),
            (
                "bind 127.0.0.1:8404",
                format!("bind 127.0.0.1:{}", free_port()),
            ),
            (
                "server a 127.0.0.1:8444 port 9901",
                format!("server a 127.0.0.1:{} port {}", a.port, a.admin),
            ),
            (
                "server b 127.0.0.1:8445 port 9902",
                format!("server b 127.0.0.1:{} port {}", b.port, b.admin),
            ),
            ("inter 2s", "inter 200ms".to_owned()),
            // Two fds per connection: this sandbox allows 20,000 per process.
            ("maxconn 20000", "maxconn 2000".to_owned()),
        ] {
            assert!(
                cfg.contains(from),
                "the shipped haproxy.cfg no longer has `{from}`"
            );
            cfg = cfg.replace(from, &to);
        }
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, cfg).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run haproxy ({e}): install Debian's haproxy package (.ci/run does)")
            });
        let h = Haproxy {
            port,
            socket,
            _dir: dir,
            _process: Spawned { child },
        };
        super::process::wait_listening(port).await;
        h
    }

    /// `show stat` from the runtime API: (server name, status, total sessions) per server.
    pub async fn servers(&self) -> Vec<(String, String, u64)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .expect("haproxy stats socket");
        s.write_all(b"show stat\n").await.expect("write");
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
            .await
            .expect("stats in time")
            .expect("read stats");
        let mut lines = out.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name).expect("stat column");
        let (px, sv, status, stot) = (col("pxname"), col("svname"), col("status"), col("stot"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| {
                f.len() > stot && f[px] == "mcp_edge" && !matches!(f[sv], "BACKEND" | "FRONTEND")
            })
            .map(|f| {
                (
                    f[sv].to_owned(),
                    f[status].to_owned(),
                    f[stot].parse().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until both servers pass their `/readyz` checks.
    pub async fn wait_up(&self) {
        for _ in 0..100 {
            let s = self.servers().await;
            if s.len() == 2 && s.iter().all(|(_, status, _)| status == "UP") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("haproxy servers not UP: {:?}", self.servers().await);
    }
}
