//! The real binary under a stand-in service manager: a Unix datagram socket named in
//! `NOTIFY_SOCKET` sees `READY=1`, then on SIGHUP `RELOADING=1` (with `MONOTONIC_USEC`) and
//! `READY=1`, then on SIGTERM `STOPPING=1`, in that order, with watchdog pings when
//! `WATCHDOG_USEC` is set; and, through `systemd-socket-activate` when installed, a proxy
//! that serves on the socket it was passed (`LISTEN_FDS`) instead of binding its own.

mod support;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::Pki;
use support::process::{self, Spawned, free_port};

/// The child (killed if the test fails half-way) and the file its stderr goes to.
struct Proxy {
    spawned: Spawned,
    log: PathBuf,
}

impl Proxy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        process::signal(&self.spawned.child, sig);
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.spawned.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One sd_notify datagram, as `KEY=VALUE` lines.
#[derive(Debug, Clone)]
struct Msg {
    raw: String,
    fields: BTreeMap<String, String>,
}

impl Msg {
    fn parse(raw: &str) -> Msg {
        let fields = raw
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("notification line without '=': {raw:?}"));
                (k.to_string(), v.to_string())
            })
            .collect();
        Msg {
            raw: raw.to_string(),
            fields,
        }
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.fields.get(key).is_some_and(|v| v == value)
    }

    /// The state change it announces, if any (watchdog pings and STATUS-only lines are not).
    fn state(&self) -> Option<&'static str> {
        if self.has("RELOADING", "1") {
            Some("RELOADING")
        } else if self.has("STOPPING", "1") {
            Some("STOPPING")
        } else if self.has("READY", "1") {
            Some("READY")
        } else {
            None
        }
    }
}

/// The stand-in service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<Msg>,
}

impl Manager {
    fn new(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Receives until a message matches `want`; panics with everything seen and the proxy's
    /// log on timeout or if the proxy exits first.
    fn expect(
        &mut self,
        proxy: &mut Proxy,
        what: &str,
        within: Duration,
        want: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = Msg::parse(&String::from_utf8_lossy(&buf[..n]));
                    self.seen.push(msg.clone());
                    if want(&msg) {
                        return msg;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            if let Some(status) = proxy.spawned.child.try_wait().expect("try_wait") {
                panic!(
                    "proxy exited ({status}) before sending {what}; seen: {:#?}\nlog:\n{}",
                    self.raw(),
                    proxy.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; seen: {:#?}\nlog:\n{}",
                self.raw(),
                proxy.log()
            );
        }
    }

    fn raw(&self) -> Vec<&str> {
        self.seen.iter().map(|m| m.raw.as_str()).collect()
    }

    fn states(&self) -> Vec<&'static str> {
        self.seen.iter().filter_map(Msg::state).collect()
    }
}

fn monotonic_usec() -> i128 {
    match sd_notify::NotifyState::monotonic_usec_now().expect("CLOCK_MONOTONIC") {
        sd_notify::NotifyState::MonotonicUsec(u) => u,
        other => panic!("unexpected {other:?}"),
    }
}

/// A config for `bind`, one route to a closed port (no request reaches it here).
fn write_config(pki: &Pki, bind: &str, port: u16) -> PathBuf {
    let config = pki.dir.path().join("mcp-edge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[listener]
bind = "{bind}"
public_url = "https://localhost:{port}"
[listener.tls]
cert = "{}"
key = "{}"
[shutdown]
drain_timeout = "2s"
[log]
format = "json"
[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
"#,
            pki.cert.display(),
            pki.key.display()
        ),
    )
    .unwrap();
    config
}

/// Environment a service manager might have left that must not leak into the child.
const MANAGER_VARS: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

#[test]
fn notifies_ready_reloading_stopping_in_order() {
    let pki = Pki::new();
    let mut manager = Manager::new(pki.dir.path());
    let port = free_port();
    let config = write_config(&pki, &format!("127.0.0.1:{port}"), port);
    let log = pki.dir.path().join("proxy.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-edge"));
    for v in MANAGER_VARS {
        cmd.env_remove(v);
    }
    let child = cmd
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &manager.path)
        // Pings every 0.5 s.
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("binary starts");
    let pid = child.id();
    let mut proxy = Proxy {
        spawned: Spawned { child },
        log,
    };

    let ready = manager.expect(&mut proxy, "READY=1", Duration::from_secs(30), |m| {
        m.has("READY", "1")
    });
    if let Some(main_pid) = ready.fields.get("MAINPID") {
        assert_eq!(main_pid, &pid.to_string(), "MAINPID names the proxy");
    }
    // READY means serving: the listener is bound by then.
    std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("READY=1 sent before the listener accepts: {e}"));
    manager.expect(&mut proxy, "WATCHDOG=1", Duration::from_secs(5), |m| {
        m.has("WATCHDOG", "1")
    });

    // Reload: RELOADING=1 with a CLOCK_MONOTONIC timestamp taken after the signal was sent
    // (systemd compares it with its own), then READY=1.
    let before = monotonic_usec();
    proxy.signal("-HUP");
    let reloading = manager.expect(&mut proxy, "RELOADING=1", Duration::from_secs(15), |m| {
        m.has("RELOADING", "1")
    });
    let after = monotonic_usec();
    let stamp: i128 = reloading
        .fields
        .get("MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {:?}", reloading.raw))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        before <= stamp && stamp <= after,
        "MONOTONIC_USEC={stamp} outside [{before}, {after}]"
    );
    manager.expect(
        &mut proxy,
        "READY=1 after the reload",
        Duration::from_secs(15),
        |m| m.has("READY", "1"),
    );

    proxy.signal("-TERM");
    manager.expect(&mut proxy, "STOPPING=1", Duration::from_secs(10), |m| {
        m.has("STOPPING", "1")
    });
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        proxy.log()
    );

    // Whatever came after STOPPING (final STATUS lines), then the whole sequence.
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.socket.recv(&mut buf) {
        let msg = Msg::parse(&String::from_utf8_lossy(&buf[..n]));
        manager.seen.push(msg);
    }
    assert_eq!(
        manager.states(),
        ["READY", "RELOADING", "READY", "STOPPING"],
        "state changes in order; seen: {:#?}",
        manager.raw()
    );
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn serves_on_a_socket_passed_by_the_service_manager() {
    let Some(activate) = which("systemd-socket-activate") else {
        eprintln!(
            "systemd-socket-activate not installed: socket activation checked by the unit tests in src/systemd.rs only"
        );
        return;
    };
    let pki = Pki::new();
    let mut manager = Manager::new(pki.dir.path());
    // listener.bind names a port this test keeps busy: a proxy that ignored the passed
    // socket and bound its own would fail to start.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let config = write_config(&pki, &busy.local_addr().unwrap().to_string(), port);
    let log = pki.dir.path().join("proxy.log");
    // systemd-socket-activate binds the port, waits for the first connection, then execs the
    // proxy in its own process with LISTEN_PID, LISTEN_FDS=1 and LISTEN_FDNAMES=https. It
    // passes only the variables given with -E.
    let child = Command::new(activate)
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--fdname=https")
        .arg(format!("--setenv=NOTIFY_SOCKET={}", manager.path.display()))
        .arg(env!("CARGO_BIN_EXE_mcp-edge"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("systemd-socket-activate starts");
    let mut proxy = Proxy {
        spawned: Spawned { child },
        log,
    };

    // The first connection wakes systemd-socket-activate; it stays in the backlog.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _wake = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "systemd-socket-activate did not listen on {port}: {e}; log:\n{}",
                    proxy.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    manager.expect(&mut proxy, "READY=1", Duration::from_secs(30), |m| {
        m.has("READY", "1")
    });

    let client = support::trusting(&pki.ca.cert_pem)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let res = client
        .get(format!("https://localhost:{port}/mcp"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS on the passed socket: {e}; log:\n{}", proxy.log()));
    // Any answer from the proxy will do (the route's upstream is closed); TLS verified
    // against the test CA shows it is ours.
    assert!(
        res.status().as_u16() >= 200,
        "answer on the passed socket: {}",
        res.status()
    );

    proxy.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = proxy.wait_exit(Duration::from_secs(20));
        (s, proxy)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit status {}; log:\n{}",
        status.0,
        status.1.log()
    );
    drop(busy);
}
