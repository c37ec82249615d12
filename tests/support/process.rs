//! The real `mcp-edge` binary as a child process: a free port for it, signals, and a guard
//! that kills it if the test fails half-way.

use std::process::Child;
use std::time::Duration;

/// A child process killed (and reaped) when dropped.
pub struct Spawned {
    pub child: Child,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `sig` (`-TERM`, `-HUP`, …) to `child` with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig}");
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` (10 s at most).
pub async fn wait_listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy did not start listening on {port}");
}
