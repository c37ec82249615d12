//! Accepts TCP connections, caps how many are open, completes the TLS handshake within its
//! deadline, and hands each connection to the HTTP server.

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
use crate::config::HttpLimits;
use crate::http::server;
use crate::proxy::{ConnInfo, Proxy};
use crate::shutdown::Shutdown;

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
}

impl PublicListener {
    /// Accepts until draining starts; connection tasks are spawned on `tasks`.
    pub async fn run(self, shutdown: Shutdown, tasks: TaskTracker) {
        let builder = Arc::new(server::builder(&self.http));
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
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached; closing new connection");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(self.tls.load_full());
            let proxy = self.proxy.clone();
            let builder = builder.clone();
            let shutdown = shutdown.clone();
            let handshake_timeout = self.handshake_timeout;
            tasks.spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
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
                let conn = Arc::new(ConnInfo { peer, client_cert });
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let proxy = proxy.clone();
                    let conn = conn.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, &conn).await) }
                });
                if let Err(e) = server::serve(&builder, tls, service, &shutdown).await {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
            });
        }
    }
}
