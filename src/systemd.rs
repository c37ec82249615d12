//! systemd integration: state notifications (the `sd_notify` protocol: `READY`, `RELOADING`
//! with its `MONOTONIC_USEC` timestamp, `STOPPING`, `STATUS`), watchdog pings, and socket
//! activation (`LISTEN_FDS`), so the port can be bound by a `.socket` unit.
//!
//! Nothing here needs systemd: without `NOTIFY_SOCKET` the [`Notifier`] is disabled and every
//! call is a no-op; without `LISTEN_PID`/`LISTEN_FDS` for this process,
//! [`activated_listeners`] returns nothing and the proxy binds its configured addresses.
//!
//! The environment is read, never modified: `std::env::remove_var` is `unsafe` once other
//! threads run (the tokio runtime is up before the listeners are set up), and nothing needs
//! it. A child (the `[certs]` alert command) that inherits the variables cannot act on them:
//! `LISTEN_PID` and `WATCHDOG_PID` name this process, so libsystemd and sd-notify ignore
//! them elsewhere; notifications from any process but the main one are dropped by the
//! service manager (`NotifyAccess=main`, the default for `Type=notify`); and the adopted
//! sockets are re-opened close-on-exec, so no child inherits a listening socket. Code that
//! spawns children may still `env_remove` them for tidiness.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The first descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// How long a notification may wait for room in the service manager's queue. systemd reads
/// its socket at once; the bound only keeps a wedged manager from stalling a runtime worker.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Talks to the service manager, if there is one (`NOTIFY_SOCKET` set); every call is a cheap
/// no-op otherwise. Cloning shares one socket.
#[derive(Clone, Debug)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    addr: UnixAddr,
    /// `NOTIFY_SOCKET` as given, for log lines.
    target: String,
    watchdog: Option<Duration>,
    pid: u32,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), `WATCHDOG_USEC`
    /// and `WATCHDOG_PID` once. Does not unset them (see the module notes). An unusable
    /// `NOTIFY_SOCKET` is logged and leaves the notifier disabled.
    pub fn from_env() -> Notifier {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::from_vars(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { inner: None }
    }

    /// The environment-free core of [`Notifier::from_env`].
    fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let Some(value) = notify_socket else {
            return Notifier::disabled();
        };
        let target = value.to_string_lossy().into_owned();
        let addr = match notify_addr(value) {
            Ok(addr) => addr,
            Err(reason) => {
                tracing::warn!(notify_socket = %target, "{reason}; systemd notifications disabled");
                return Notifier::disabled();
            }
        };
        let socket = match UnixDatagram::unbound()
            .and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(notify_socket = %target, error = %e, "cannot create a socket for systemd notifications; disabled");
                return Notifier::disabled();
            }
        };
        Notifier {
            inner: Some(Arc::new(Inner {
                socket,
                addr,
                target,
                watchdog: watchdog_interval(watchdog_usec, watchdog_pid, pid),
                pid,
            })),
        }
    }

    /// Whether a service manager is listening (`NOTIFY_SOCKET` was set and usable).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Start-up finished: `READY=1`, `STATUS=<status>`, `MAINPID=<our pid>`. Send it once the
    /// listeners are bound and the signal handlers installed.
    pub fn ready(&self, status: &str) {
        let Some(inner) = &self.inner else { return };
        let status = clean_status(status);
        inner.send_state(&[
            NotifyState::Ready,
            NotifyState::Status(&status),
            NotifyState::MainPid(inner.pid),
        ]);
    }

    /// A reload begins: `RELOADING=1` and `MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>` in one
    /// message (`Type=notify-reload` fails the reload without the timestamp). Must be followed
    /// by [`Notifier::reloaded`], whether the reload worked or not.
    pub fn reloading(&self) {
        let Some(inner) = &self.inner else { return };
        match NotifyState::monotonic_usec_now() {
            Ok(now) => inner.send_state(&[NotifyState::Reloading, now]),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read CLOCK_MONOTONIC; RELOADING sent without a timestamp");
                inner.send_state(&[NotifyState::Reloading]);
            }
        }
    }

    /// A reload finished (applied or refused): `READY=1`, `STATUS=<status>`.
    pub fn reloaded(&self, status: &str) {
        let Some(inner) = &self.inner else { return };
        let status = clean_status(status);
        inner.send_state(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// Shutdown began: `STOPPING=1`, `STATUS=<status>`.
    pub fn stopping(&self, status: &str) {
        let Some(inner) = &self.inner else { return };
        let status = clean_status(status);
        inner.send_state(&[NotifyState::Stopping, NotifyState::Status(&status)]);
    }

    /// Free-form status for `systemctl status`: `STATUS=<status>`.
    pub fn status(&self, status: &str) {
        let Some(inner) = &self.inner else { return };
        let status = clean_status(status);
        inner.send(&[NotifyState::Status(&status)], false);
    }

    /// Watchdog keep-alive: `WATCHDOG=1`.
    pub fn watchdog(&self) {
        let Some(inner) = &self.inner else { return };
        inner.send(&[NotifyState::Watchdog], false);
    }

    /// How often to ping: half of `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or ours. `None`
    /// without a watchdog, or when notifications are disabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|i| i.watchdog)
    }
}

impl Inner {
    /// A state change: a lost one leaves systemd waiting (start or reload timeout), so a
    /// failure is worth a warning.
    fn send_state(&self, states: &[NotifyState<'_>]) {
        self.send(states, true);
    }

    fn send(&self, states: &[NotifyState<'_>], important: bool) {
        let msg = message(states);
        match self.socket.send_to_addr(msg.as_bytes(), &self.addr) {
            Ok(n) if n == msg.len() => {}
            Ok(n) => {
                tracing::debug!(notify_socket = %self.target, sent = n, len = msg.len(), "systemd notification truncated")
            }
            Err(e) if important => {
                tracing::warn!(notify_socket = %self.target, error = %e, message = %msg.trim_end(), "systemd notification not delivered");
            }
            Err(e) => {
                tracing::debug!(notify_socket = %self.target, error = %e, message = %msg.trim_end(), "systemd notification not delivered");
            }
        }
    }
}

/// One datagram: one `KEY=VALUE` line per state.
fn message(states: &[NotifyState<'_>]) -> String {
    let mut msg = String::new();
    for s in states {
        let _ = writeln!(msg, "{s}");
    }
    msg
}

/// `STATUS=` is one line: a newline in an error text would otherwise start a new field (a
/// `READY=1` smuggled in a file name, say).
fn clean_status(status: &str) -> String {
    status
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Parses `NOTIFY_SOCKET`: an absolute path, or `@name` in the abstract namespace.
fn notify_addr(value: &OsStr) -> Result<UnixAddr, String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'@') => UnixAddr::from_abstract_name(&bytes[1..])
            .map_err(|e| format!("NOTIFY_SOCKET is not a usable abstract socket name: {e}")),
        Some(b'/') => UnixAddr::from_pathname(value)
            .map_err(|e| format!("NOTIFY_SOCKET is not a usable socket path: {e}")),
        _ => Err(
            "NOTIFY_SOCKET is neither an absolute path nor an @abstract name (vsock is not supported)"
                .to_string(),
        ),
    }
}

/// Half of `WATCHDOG_USEC` (as `sd_watchdog_enabled` advises), when the watchdog is meant for
/// `pid`: `WATCHDOG_PID` unset or equal to it. Malformed values disable the watchdog.
fn watchdog_interval(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok().filter(|&u| u > 0)?;
    if watchdog_pid.is_some_and(|p| parse_decimal::<u32>(p) != Some(pid)) {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Spawns a task pinging the watchdog at `interval` (the first ping at once) until `stop`
/// fires. Cancel `stop` when the process is about to exit, not when draining starts:
/// systemd keeps the watchdog armed while the service stops.
pub fn spawn_watchdog(
    n: Notifier,
    interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => n.watchdog(),
            }
        }
    })
}

/// Why the sockets passed by the service manager cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID` is not a number.
    #[error(
        "socket activation: LISTEN_PID={0:?} is not a process id; the service manager's environment is malformed"
    )]
    BadPid(String),
    /// `LISTEN_FDS` is not a (sane) count.
    #[error(
        "socket activation: LISTEN_FDS={0:?} is not a descriptor count; the service manager's environment is malformed"
    )]
    BadCount(String),
    /// `LISTEN_FDNAMES` names a different number of sockets than `LISTEN_FDS` passes.
    #[error(
        "socket activation: LISTEN_FDNAMES={names:?} names {named} sockets but LISTEN_FDS passes {count}"
    )]
    NamesMismatch {
        /// `LISTEN_FDNAMES` as given.
        names: String,
        /// Entries in it.
        named: usize,
        /// `LISTEN_FDS`.
        count: usize,
    },
    /// The sockets were already taken by an earlier call.
    #[error("socket activation: the passed sockets were already taken")]
    AlreadyTaken,
    /// A passed descriptor cannot serve as the proxy's listener.
    #[error("socket activation: {which} {problem}")]
    Unusable {
        /// Descriptor number and name, e.g. `fd 3 ("https")`.
        which: String,
        /// What is wrong and what to change in the `.socket` unit.
        problem: String,
    },
}

/// Set once the passed descriptors have been adopted, so no descriptor gets two owners.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Listening sockets passed by socket activation, as std `TcpListener`s set non-blocking,
/// each with its name from `LISTEN_FDNAMES` (`FileDescriptorName=` in the `.socket` unit;
/// `None` when unnamed). Empty when not socket-activated (`LISTEN_PID` unset or another
/// process's, `LISTEN_FDS` unset or 0).
///
/// Each socket must be a listening TCP socket (`ListenStream=` with an IP address and
/// `Accept=no`). The sockets are re-opened close-on-exec. The `LISTEN_*` variables are left
/// as they are (see the module notes); a second call returns
/// [`ActivationError::AlreadyTaken`].
pub fn activated_listeners() -> Result<Vec<(Option<String>, TcpListener)>, ActivationError> {
    let var = |k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    let passed = parse_activation(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    if passed.is_empty() {
        return Ok(Vec::new());
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(ActivationError::AlreadyTaken);
    }
    let mut out = Vec::with_capacity(passed.len());
    for (raw, name) in passed {
        probe_fd(raw, name.as_deref())?;
        #[allow(unsafe_code)]
        // SAFETY: descriptors 3..3+LISTEN_FDS were passed to this process (LISTEN_PID is our
        // pid) by the service manager and are owned by nothing else in it: std opens nothing
        // below them before main, and `TAKEN` makes sure each is adopted exactly once. The
        // descriptor is open and a socket (checked just above through /proc/self/fd).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        out.push((name.clone(), listener_from_fd(fd, raw, name.as_deref())?));
    }
    Ok(out)
}

/// The environment-free core of [`activated_listeners`]: which descriptors, with which names.
fn parse_activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> Result<Vec<(RawFd, Option<String>)>, ActivationError> {
    let Some(listen_pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let listen_pid: u32 =
        parse_decimal(listen_pid).ok_or_else(|| ActivationError::BadPid(listen_pid.to_string()))?;
    if listen_pid != pid {
        return Ok(Vec::new());
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(Vec::new());
    };
    let count: RawFd = parse_decimal(listen_fds)
        .filter(|&n: &RawFd| n.checked_add(LISTEN_FDS_START).is_some())
        .ok_or_else(|| ActivationError::BadCount(listen_fds.to_string()))?;
    let count = count as usize;
    let names: Vec<Option<String>> = match listen_fdnames {
        None => vec![None; count],
        Some(all) => {
            let names: Vec<Option<String>> = all
                .split(':')
                .map(|n| match n {
                    // "unknown" is what libsystemd reports for an unnamed descriptor.
                    "" | "unknown" => None,
                    n => Some(n.to_string()),
                })
                .collect();
            if names.len() != count && count > 0 {
                return Err(ActivationError::NamesMismatch {
                    names: all.to_string(),
                    named: names.len(),
                    count,
                });
            }
            names
        }
    };
    Ok((LISTEN_FDS_START..)
        .zip(names)
        .take(count)
        .collect::<Vec<_>>())
}

/// Digits only (`str::parse` would also take a leading `+`).
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `fd 3 ("https")`.
fn describe(raw: RawFd, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("fd {raw} ({n:?})"),
        None => format!("fd {raw}"),
    }
}

fn unusable(raw: RawFd, name: Option<&str>, problem: impl Into<String>) -> ActivationError {
    ActivationError::Unusable {
        which: describe(raw, name),
        problem: problem.into(),
    }
}

/// Checks through /proc that `raw` is open and a socket before anything claims it. Without
/// /proc (not mounted) the check is skipped and the socket checks that follow still apply.
fn probe_fd(raw: RawFd, name: Option<&str>) -> Result<(), ActivationError> {
    use std::os::unix::fs::FileTypeExt;
    if !std::path::Path::new("/proc/self/fd").is_dir() {
        return Ok(());
    }
    match std::fs::metadata(format!("/proc/self/fd/{raw}")) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(_) => Err(unusable(
            raw,
            name,
            "is not a socket; check LISTEN_FDS and the .socket unit",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unusable(
            raw,
            name,
            "is not open although LISTEN_FDS counts it",
        )),
        Err(_) => Ok(()),
    }
}

/// Turns an adopted descriptor into a non-blocking, close-on-exec `TcpListener`, refusing
/// anything that is not a listening TCP socket.
fn listener_from_fd(
    fd: OwnedFd,
    raw: RawFd,
    name: Option<&str>,
) -> Result<TcpListener, ActivationError> {
    let io = |what: &str, e: std::io::Error| unusable(raw, name, format!("{what}: {e}"));
    // Sockets passed by the service manager are inheritable; a duplicate from std is
    // close-on-exec. The original is closed when `fd` drops.
    let fd = fd.try_clone().map_err(|e| io("cannot be duplicated", e))?;
    // A TcpStream view only to ask the questions std answers on streams.
    let sock = TcpStream::from(fd);
    if let Err(e) = sock.local_addr() {
        return Err(unusable(
            raw,
            name,
            format!(
                "is not an IPv4/IPv6 socket ({e}); use ListenStream=ADDRESS:PORT, not a Unix socket path"
            ),
        ));
    }
    // TCP_NODELAY exists on TCP sockets only: a UDP socket fails here.
    if sock.nodelay().is_err() {
        return Err(unusable(
            raw,
            name,
            "is not a TCP socket; use ListenStream=, not ListenDatagram=",
        ));
    }
    // A connected socket is a single connection from `Accept=yes`.
    if sock.peer_addr().is_ok() {
        return Err(unusable(
            raw,
            name,
            "is a connection, not a listening socket; set Accept=no in the .socket unit",
        ));
    }
    let listener = TcpListener::from(OwnedFd::from(sock));
    listener
        .set_nonblocking(true)
        .map_err(|e| io("cannot be made non-blocking", e))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("notification arrives");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn disabled_without_notify_socket() {
        let n = Notifier::from_vars(None, Some("1000000"), None, 7);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        // No-ops, no panics.
        n.ready("x");
        n.reloading();
        n.reloaded("x");
        n.stopping("x");
        n.status("x");
        n.watchdog();
        assert!(!Notifier::disabled().is_enabled());
    }

    #[test]
    fn unusable_notify_socket_values_disable() {
        for v in ["", "relative/path", "vsock:2:1234"] {
            let n = Notifier::from_vars(Some(OsStr::new(v)), None, None, 7);
            assert!(!n.is_enabled(), "{v:?}");
        }
        let long = format!("/{}", "a".repeat(200));
        assert!(!Notifier::from_vars(Some(OsStr::new(&long)), None, None, 7).is_enabled());
    }

    #[test]
    fn messages_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_vars(Some(path.as_os_str()), None, None, 4242);
        assert!(n.is_enabled());

        n.ready("serving on 127.0.0.1:8443");
        assert_eq!(
            recv(&sock),
            "READY=1\nSTATUS=serving on 127.0.0.1:8443\nMAINPID=4242\n"
        );

        let before = match NotifyState::monotonic_usec_now().unwrap() {
            NotifyState::MonotonicUsec(u) => u,
            _ => unreachable!(),
        };
        n.reloading();
        let msg = recv(&sock);
        let after = match NotifyState::monotonic_usec_now().unwrap() {
            NotifyState::MonotonicUsec(u) => u,
            _ => unreachable!(),
        };
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let ts: i128 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .expect("timestamp in the same message")
            .parse()
            .unwrap();
        assert!(before <= ts && ts <= after, "{before} <= {ts} <= {after}");
        assert_eq!(lines.next(), None);

        n.reloaded("config reloaded");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=config reloaded\n");
        n.status("2 routes");
        assert_eq!(recv(&sock), "STATUS=2 routes\n");
        n.watchdog();
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
        n.clone().stopping("draining");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=draining\n");
    }

    #[test]
    fn status_cannot_inject_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_vars(Some(path.as_os_str()), None, None, 1);
        n.status("bad file /etc/x\nREADY=1\r\0");
        assert_eq!(recv(&sock), "STATUS=bad file /etc/x READY=1  \n");
    }

    #[test]
    fn abstract_socket() {
        let name = format!(
            "mcp-edge-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let value = format!("@{name}");
        let n = Notifier::from_vars(Some(OsStr::new(&value)), None, None, 1);
        n.stopping("bye");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=bye\n");
    }

    #[test]
    fn send_failures_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody-listens.sock");
        let n = Notifier::from_vars(Some(path.as_os_str()), None, None, 1);
        assert!(n.is_enabled());
        n.ready("x");
        n.watchdog();
    }

    #[test]
    fn watchdog_interval_rules() {
        let d = |u, p| watchdog_interval(u, p, 100);
        assert_eq!(d(Some("30000000"), None), Some(Duration::from_secs(15)));
        assert_eq!(
            d(Some("30000000"), Some("100")),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            d(Some("30000000"), Some("101")),
            None,
            "another process's watchdog"
        );
        assert_eq!(d(Some("30000000"), Some("x")), None);
        assert_eq!(d(Some("0"), None), None);
        assert_eq!(d(Some("-5"), None), None);
        assert_eq!(d(Some("soon"), None), None);
        assert_eq!(d(None, Some("100")), None);
        assert_eq!(d(Some("1"), None), Some(Duration::from_nanos(500)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let n = Notifier::from_vars(Some(path.as_os_str()), Some("2000000"), Some("9"), 9);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn watchdog_task_pings_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        let n = Notifier::from_vars(Some(path.as_os_str()), Some("100000"), None, 1);
        let every = n.watchdog_interval().unwrap();
        assert_eq!(every, Duration::from_millis(50));
        let stop = CancellationToken::new();
        let task = spawn_watchdog(n, every, stop.clone());
        tokio::time::sleep(every * 4).await;
        stop.cancel();
        task.await.unwrap();
        let drain = |sock: &UnixDatagram| {
            let mut buf = [0u8; 64];
            let mut pings = 0;
            while let Ok(len) = sock.recv(&mut buf) {
                assert_eq!(&buf[..len], b"WATCHDOG=1\n");
                pings += 1;
            }
            pings
        };
        // At once, then every interval (fewer on a loaded machine, never none).
        assert!((1..=6).contains(&drain(&sock)));
        tokio::time::sleep(every * 2).await;
        assert_eq!(drain(&sock), 0, "no pings after stop");
    }

    #[test]
    fn activation_parsing() {
        let p = |pid, fds, names| parse_activation(pid, fds, names, 500);
        // Not activated, or activated for another process (an inherited environment).
        assert!(p(None, Some("2"), None).unwrap().is_empty());
        assert!(
            p(Some("499"), Some("2"), Some("https:admin"))
                .unwrap()
                .is_empty()
        );
        assert!(p(Some("500"), None, None).unwrap().is_empty());
        assert!(p(Some("500"), Some("0"), None).unwrap().is_empty());
        assert!(p(Some("500"), Some("0"), Some("")).unwrap().is_empty());

        assert_eq!(
            p(Some("500"), Some("2"), None).unwrap(),
            vec![(3, None), (4, None)]
        );
        assert_eq!(
            p(Some("500"), Some("3"), Some("https:admin:unknown")).unwrap(),
            vec![
                (3, Some("https".to_string())),
                (4, Some("admin".to_string())),
                (5, None)
            ]
        );
        assert_eq!(
            p(Some("500"), Some("1"), Some("")).unwrap(),
            vec![(3, None)]
        );

        for bad in [
            "",
            "two",
            "-1",
            "+1",
            " 1",
            "1 ",
            "2147483645",
            "99999999999",
        ] {
            assert!(
                matches!(
                    p(Some("500"), Some(bad), None),
                    Err(ActivationError::BadCount(_))
                ),
                "LISTEN_FDS={bad:?}"
            );
        }
        for bad in ["", "me", "-500", "500x"] {
            assert!(
                matches!(
                    p(Some(bad), Some("1"), None),
                    Err(ActivationError::BadPid(_))
                ),
                "LISTEN_PID={bad:?}"
            );
        }
        let e = p(Some("500"), Some("2"), Some("https")).unwrap_err();
        assert!(matches!(
            e,
            ActivationError::NamesMismatch {
                named: 1,
                count: 2,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "socket activation: LISTEN_FDNAMES=\"https\" names 1 sockets but LISTEN_FDS passes 2"
        );
    }

    #[test]
    fn adopts_a_listening_tcp_socket() {
        let original = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = original.local_addr().unwrap();
        let l = listener_from_fd(OwnedFd::from(original), 3, Some("https")).unwrap();
        assert_eq!(l.local_addr().unwrap(), addr);
        // Non-blocking: no pending connection means WouldBlock, not a hang.
        assert_eq!(
            l.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        let _client = TcpStream::connect(addr).unwrap();
        let mut accepted = None;
        for _ in 0..100 {
            match l.accept() {
                Ok(c) => {
                    accepted = Some(c);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        assert!(accepted.is_some(), "accepts on the adopted socket");
    }

    #[test]
    fn refuses_sockets_that_cannot_listen_for_tcp() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = listener_from_fd(OwnedFd::from(udp), 3, Some("https")).unwrap_err();
        assert!(e.to_string().contains("ListenDatagram"), "{e}");
        assert!(
            e.to_string()
                .starts_with("socket activation: fd 3 (\"https\")"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let e = listener_from_fd(OwnedFd::from(unix), 4, None).unwrap_err();
        assert!(e.to_string().contains("not a Unix socket path"), "{e}");

        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let e = listener_from_fd(OwnedFd::from(conn), 5, None).unwrap_err();
        assert!(e.to_string().contains("Accept=no"), "{e}");
    }

    #[test]
    fn probe_rejects_closed_and_non_socket_descriptors() {
        // Far above any descriptor limit, so it can never be open.
        let e = probe_fd(1_000_000, None).unwrap_err();
        assert!(e.to_string().contains("is not open"), "{e}");
        let file = tempfile::tempfile().unwrap();
        use std::os::fd::AsRawFd;
        let e = probe_fd(file.as_raw_fd(), Some("https")).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        let sock = TcpListener::bind("127.0.0.1:0").unwrap();
        probe_fd(sock.as_raw_fd(), None).unwrap();
    }

    #[test]
    fn no_activation_in_tests() {
        // The test runner is not socket-activated: nothing is adopted, nothing is taken.
        if std::env::var_os("LISTEN_PID").is_none() {
            assert!(activated_listeners().unwrap().is_empty());
        }
    }
}
