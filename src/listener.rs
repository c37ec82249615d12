//! Accepts TCP connections, caps how many are open in total and per client address, caps
//! the TLS handshakes in progress, completes each handshake within its deadline, and hands
//! each connection to the HTTP server (which applies the first-request and idle deadlines)
//! behind a deadline on blocked writes (`sse.client_write_timeout`).
//!
//! Handshakes beyond `listener.max_handshakes_in_flight` wait for a slot, for at most
//! `listener.handshake_timeout`, and are then closed; a connection that gets a slot has the
//! whole handshake deadline for its handshake. Waiting costs a task and a socket, not a TLS
//! state or any crypto, so a flood of connections that never finish their handshake bounds
//! the proxy's CPU and memory instead of exhausting them; the connection caps bound the
//! sockets.

mod per_ip;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::auth::mtls::ClientIdentity;
use crate::http::server::HttpLimits;
use crate::http::server::{self, Closed, WriteDeadline};
use crate::metrics::{HandshakeFailure, Metrics};
use crate::proxy::{ConnInfo, Proxy};
use crate::shutdown::Shutdown;

pub use per_ip::{PerIpLimit, PerIpPermit};

/// What the accept loop needs.
pub struct PublicListener {
    /// Bound socket.
    pub listener: TcpListener,
    /// Current TLS configuration; read per handshake so reloads apply to new connections only.
    pub tls: Arc<ArcSwap<ServerConfig>>,
    /// The request pipeline.
    pub proxy: Arc<Proxy>,
    /// HTTP limits.
    pub http: HttpLimits,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Bounds open connections: each holds a permit until it closes. Beyond the cap new
    /// connections are closed at once, so a flood cannot exhaust file descriptors.
    pub connections: Arc<Semaphore>,
    /// Bounds open connections per client address, so one host cannot take every permit.
    pub per_ip: Arc<PerIpLimit>,
    /// Bounds TLS handshakes in progress: each holds a permit until its handshake ends.
    /// Beyond the cap connections wait (see the module docs), so a handshake flood cannot
    /// take every core and the memory of thousands of TLS states.
    pub handshakes: Arc<Semaphore>,
}

impl PublicListener {
    /// Accepts until draining starts; connection tasks are spawned on `tasks`.
    pub async fn run(self, shutdown: Shutdown, tasks: TaskTracker) {
        let server = Arc::new(server::Server::new(&self.http));
        let mut refusals = RefusalLog::default();
        let metrics = self.proxy.metrics().clone();
        let enabled = metrics.enabled();
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.drain().cancelled() => break,
                res = self.listener.accept() => match res {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning on the error.
                        tracing::warn!(error = %e, "accept failed; retrying in 100ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let accepted = tokio::time::Instant::now();
            if enabled {
                metrics.conn.accepted.inc();
            }
            // Per address first: an address over its cap must not take a global permit, even
            // for a moment.
            let Some(ip_permit) = self.per_ip.try_acquire(peer.ip()) else {
                if enabled {
                    metrics.conn.refused_per_ip.inc();
                }
                refusals.per_ip(peer);
                continue;
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                if enabled {
                    metrics.conn.refused_cap.inc();
                }
                refusals.global(peer);
                continue;
            };
            let conn_metrics = enabled.then(|| OpenConnection::new(&metrics));
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(self.tls.load_full());
            let proxy = self.proxy.clone();
            let server = server.clone();
            let shutdown = shutdown.clone();
            let handshake_timeout = self.handshake_timeout;
            let handshakes = self.handshakes.clone();
            // Read per connection, so a reload applies to new connections.
            let write_timeout = proxy.gateway().config.sse.client_write_timeout;
            tasks.spawn(async move {
                // Both permits live exactly as long as this task, so every way out (handshake
                // failure, timeouts, close, panic) gives them back.
                let _permits = (permit, ip_permit);
                let Ok(Ok(slot)) =
                    tokio::time::timeout(handshake_timeout, handshakes.acquire_owned()).await
                else {
                    if let Some(c) = &conn_metrics {
                        c.metrics.conn.refused_handshake_slot.inc();
                    }
                    tracing::debug!(%peer, "no TLS handshake slot in time; closing");
                    return;
                };
                let started = std::time::Instant::now();
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
                drop(slot);
                let tls = match handshake {
                    Ok(Ok(tls)) => {
                        if let Some(c) = &conn_metrics {
                            c.metrics
                                .conn
                                .handshake_ok(tls.get_ref().1.protocol_version(), started.elapsed());
                        }
                        tls
                    }
                    Ok(Err(e)) => {
                        if let Some(c) = &conn_metrics {
                            c.metrics
                                .conn
                                .handshake_failed(HandshakeFailure::of(&e), started.elapsed());
                        }
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        if let Some(c) = &conn_metrics {
                            c.metrics
                                .conn
                                .handshake_failed(HandshakeFailure::Timeout, started.elapsed());
                        }
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                // Verified by rustls already (chain, CRLs); here we only read who it names.
                let client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|der| ClientIdentity::from_der(der.as_ref()))
                    .map(Arc::new);
                let write_stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let conn = Arc::new(ConnInfo {
                    peer,
                    client_cert,
                    write_stalled: write_stalled.clone(),
                });
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let proxy = proxy.clone();
                    let conn = conn.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, &conn).await) }
                });
                let io = WriteDeadline::new(tls, write_timeout, write_stalled.clone());
                match server.serve(io, service, &shutdown, accepted).await {
                    Ok(Closed::Client | Closed::Drained) => {}
                    Ok(reason) => {
                        tracing::debug!(%peer, reason = reason.as_str(), "connection closed")
                    }
                    Err(_) if write_stalled.load(std::sync::atomic::Ordering::Relaxed) => {
                        tracing::info!(%peer, "client stopped reading; connection closed (sse.client_write_timeout)")
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "connection ended with error"),
                }
            });
        }
    }
}

/// A connection counted open in `mcp_edge_connections_open` until dropped.
struct OpenConnection {
    metrics: Arc<Metrics>,
}

impl OpenConnection {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.conn.open.inc();
        OpenConnection {
            metrics: metrics.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.conn.open.dec();
    }
}

/// Warnings for refused connections, at most one per kind per second: under a flood a line
/// per connection would bury the log (and cost more than the refusal itself).
#[derive(Default)]
struct RefusalLog {
    global: Throttle,
    per_ip: Throttle,
}

impl RefusalLog {
    fn global(&mut self, peer: std::net::SocketAddr) {
        if let Some(suppressed) = self.global.hit() {
            tracing::warn!(
                %peer,
                suppressed,
                "connection limit reached; closing new connection"
            );
        }
    }

    fn per_ip(&mut self, peer: std::net::SocketAddr) {
        if let Some(suppressed) = self.per_ip.hit() {
            tracing::warn!(
                %peer,
                suppressed,
                "per-address connection limit reached; closing new connection"
            );
        }
    }
}

/// Lets one event through per second and counts the ones held back in between.
#[derive(Default)]
struct Throttle {
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last one)` when this event should be logged.
    fn hit(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}
