//! The one build path from a validated config to everything the proxy serves with:
//! `Config → Prepared`. Start-up binds a [`Prepared`], a config reload swaps one in, and
//! `mcp-edge check` prints one, so the three can no longer disagree about what a config
//! means.
//!
//! [`prepare`] loads and checks, in this order, stopping at the first problem:
//! 1. the listener TLS material ([`tls`]): server certificates and keys (PEM parses, key
//!    matches, SNI names covered), each certificate's validity window, the `public_url` host,
//!    the client CA bundle and CRLs, and the rustls configuration;
//! 2. the gateway: token issuers, the session sealer, the upstream token signer, the routes
//!    and their upstream clients (CA bundles, client certificates);
//! 3. the audit HMAC key and the certificate alert hooks.
//!
//! What each caller gets is the same, with one deliberate difference, named by [`Purpose`]:
//!
//! | finding | start | reload | check |
//! |---|---|---|---|
//! | unusable file, SNI name not covered, bad CRL, bad key | error | error | error |
//! | `listener.public_url` host not covered by the certificate served for it (IP hosts too) | error | error | error |
//! | certificate expired or not yet valid | warning, served anyway | error, unless that certificate is in service (then a warning) | error |
//! | issuer keys (`jwks_url`, `jwks_file`, …) | loaded | loaded | not contacted |
//!
//! An uncovered `public_url` host is an error everywhere: clients that connect to the URL
//! the proxy advertises would fail every handshake, and a proxy started that way could never
//! take a certificate reload. An expired certificate only warns at start-up because nothing
//! else is in service then: refusing would take down the routes on the other certificates too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest;
use rustls::ServerConfig;

use crate::auth::bearer::{IssuerSetupError, Issuers};
use crate::auth::mtls::VerifierError;
use crate::auth::upstream_token::{UpstreamSigner, UpstreamTokenError};
use crate::certs::alerts::{AlertSetupError, Alerter};
use crate::certs::{CertError, LoadedCert};
use crate::config::Config;
use crate::proxy::{Gateway, RouteSetupError};
use crate::session::{KeyError, SessionSealer};
use crate::tls::TlsSetupError;

/// What a [`Prepared`] is built for; decides how certificates outside their validity window
/// are treated and whether issuer key sources are contacted (see the module table).
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// `mcp-edge run` start-up.
    Start,
    /// A reload of a running proxy; `serving` are the server certificates in service now.
    Reload {
        /// Certificates in service: an expired one among them does not block the reload.
        serving: &'a [LoadedCert],
    },
    /// `mcp-edge check`: no network calls, so issuer key sources are left alone.
    Check,
}

/// Why a config could not be prepared; each message names the config key or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The listener's TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A token issuer's keys could not be set up.
    #[error(transparent)]
    Issuers(#[from] IssuerSetupError),
    /// The session sealing key is unusable.
    #[error("sessions: {0}")]
    SessionKey(KeyError),
    /// The upstream token signing key is unusable.
    #[error("auth.upstream_token: {0}")]
    UpstreamToken(#[from] UpstreamTokenError),
    /// A route's upstream client configuration is unusable.
    #[error(transparent)]
    Routes(#[from] RouteSetupError),
    /// The audit HMAC key is unusable.
    #[error("audit.hmac_key_file: {0}")]
    AuditKey(KeyError),
    /// The certificate alert hooks cannot be set up (boxed: the rarest and largest error).
    #[error("certs: {0}")]
    Alerts(Box<AlertSetupError>),
}

/// Why the listener TLS material of a config is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A server certificate or key is unusable, or an SNI name is not covered.
    #[error("listener.tls: {0}")]
    Cert(#[from] CertError),
    /// The client CA bundle or a CRL is unusable.
    #[error("listener.tls client certificates: {0}")]
    ClientAuth(#[from] VerifierError),
    /// rustls refused the configuration.
    #[error("listener.tls: {0}")]
    Setup(#[from] TlsSetupError),
    /// A certificate is past its not-after date.
    #[error(
        "listener.tls: certificate {path} expired at {not_after}; install a renewed certificate"
    )]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its not-after date (RFC 3339).
        not_after: String,
    },
    /// A certificate is not valid yet (clients reject it).
    #[error(
        "listener.tls: certificate {path} is not valid before {not_before}; check the issuer's clock or install the current certificate"
    )]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its not-before date (RFC 3339).
        not_before: String,
    },
    /// The certificate served for `listener.public_url`'s host does not cover it.
    #[error(
        "listener.public_url: certificate {path} does not cover `{host}`, the host clients connect to (it names [{names}]); add `{host}` to the certificate (an IP address needs an IP SAN) or set public_url to a name it covers"
    )]
    HostNotCovered {
        /// The certificate file (the default one unless an SNI entry names the host).
        path: PathBuf,
        /// Host of `listener.public_url`.
        host: String,
        /// The certificate's DNS and IP names.
        names: String,
    },
}

/// Something worth telling the operator that does not stop the config from being used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A certificate outside its validity window is served anyway.
    OutsideValidity {
        /// The certificate file.
        path: PathBuf,
        /// Its subject.
        subject: String,
        /// What is wrong with the dates, e.g. `expired at 2026-01-01T00:00:00Z`.
        problem: String,
        /// It has expired (rather than not being valid yet).
        expired: bool,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::OutsideValidity { path, problem, .. } => write!(
                f,
                "listener.tls: certificate {} {problem} and is served anyway (clients that get it fail their handshakes); install a current certificate",
                path.display()
            ),
        }
    }
}

impl Warning {
    /// Logs the warning; an expired serving certificate is an error-level event.
    pub fn log(&self) {
        match self {
            Warning::OutsideValidity {
                path,
                subject,
                expired: true,
                ..
            } => {
                tracing::error!(path = %path.display(), subject, warning = %self, "serving certificate has expired");
            }
            Warning::OutsideValidity { path, subject, .. } => {
                tracing::warn!(path = %path.display(), subject, warning = %self, "serving certificate is not valid yet");
            }
        }
    }
}

/// The listener TLS material built from one config, ready to serve or swap in.
pub struct TlsMaterial {
    /// The listener configuration.
    pub config: Arc<ServerConfig>,
    /// The server certificates in it, the default one first.
    pub certs: Vec<LoadedCert>,
    /// Digest of the listener TLS files as read (the reloader's change detection).
    pub(crate) listener_digest: [u8; 32],
    /// Digest of the upstream TLS files as read.
    pub(crate) upstream_digest: [u8; 32],
}

/// Where and how the audit log is written, with its HMAC key already loaded.
pub struct AuditSetup {
    /// The log file (`audit.file`).
    pub file: PathBuf,
    /// Key, fsync policy and queue settings.
    pub options: crate::audit::AuditOptions,
}

/// Everything built from one config before it serves: what start binds, reload swaps and
/// check prints.
pub struct Prepared {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Listener TLS configuration and the certificates in it.
    pub tls: TlsMaterial,
    /// The request-path snapshot: routes, issuers, sessions, upstream clients.
    pub gateway: Gateway,
    /// The audit log settings, if `[audit]` is configured (the file is opened by start only).
    pub audit: Option<AuditSetup>,
    /// The certificate expiry alert hooks of `[certs]`.
    pub alerter: Alerter,
    /// Problems that do not stop the config from being used, in the order found.
    pub warnings: Vec<Warning>,
}

/// Builds and checks everything `config` needs before it serves (see the module docs).
pub async fn prepare(
    config: impl Into<Arc<Config>>,
    purpose: Purpose<'_>,
) -> Result<Prepared, PrepareError> {
    let config = config.into();
    let (tls, warnings) = tls(&config, SystemTime::now(), purpose)?;
    let gateway = gateway(&config, purpose).await?;
    let audit = match &config.audit {
        None => None,
        Some(a) => {
            let hmac_key = a
                .hmac_key_file
                .as_deref()
                .map(crate::session::load_key_file)
                .transpose()
                .map_err(PrepareError::AuditKey)?
                .map(|k| k.to_vec());
            Some(AuditSetup {
                file: a.file.clone(),
                options: crate::audit::AuditOptions {
                    hmac_key,
                    fsync: a.fsync,
                    ..Default::default()
                },
            })
        }
    };
    let alerter = Alerter::new(&config.certs).map_err(|e| PrepareError::Alerts(Box::new(e)))?;
    Ok(Prepared {
        config,
        tls,
        gateway,
        audit,
        alerter,
        warnings,
    })
}

/// The request-path snapshot of `config`: issuers (not contacted for [`Purpose::Check`]),
/// session sealer, upstream token signer, routes and their upstream clients.
async fn gateway(config: &Arc<Config>, purpose: Purpose<'_>) -> Result<Gateway, PrepareError> {
    let issuers = match purpose {
        // `check` makes no network calls, and the issuers' key files are documented as
        // opened by `run` only.
        Purpose::Check => Issuers::default(),
        Purpose::Start | Purpose::Reload { .. } => Issuers::build(&config.auth).await?,
    };
    let sealer =
        SessionSealer::from_settings(&config.sessions).map_err(PrepareError::SessionKey)?;
    let signer = UpstreamSigner::from_settings(config.auth.upstream_token.as_ref())?;
    Ok(Gateway::new(
        config.clone(),
        Arc::new(issuers),
        Arc::new(sealer),
        signer,
    )?)
}

/// Loads and checks the listener TLS material of `cfg` as of `now` (also used alone by the
/// certificate reload, which re-reads TLS files without re-reading the config).
pub fn tls(
    cfg: &Config,
    now: SystemTime,
    purpose: Purpose<'_>,
) -> Result<(TlsMaterial, Vec<Warning>), TlsError> {
    // Digest first: if a file is being rewritten while we read it, the next event or rescan
    // sees a different digest and loads again.
    let listener_digest = digest_files(&listener_files(cfg));
    let upstream_digest = digest_files(&upstream_files(cfg));
    let (resolver, certs) = crate::tls::load_resolver(&cfg.listener.tls)?;
    let warnings = check_validity(&certs, now, purpose)?;
    check_public_host(cfg, &resolver, &certs)?;
    let verifier = crate::auth::mtls::verifier(&cfg.listener.tls.client_auth, now)?;
    let config =
        crate::tls::server_config(Arc::new(resolver), cfg.listener.tls.allow_tls12, verifier)?;
    let material = TlsMaterial {
        config,
        certs,
        listener_digest,
        upstream_digest,
    };
    Ok((material, warnings))
}

/// Applies the validity rule of `purpose` to every server certificate: expired ones first,
/// then ones not valid yet, so the message is about the worse problem.
fn check_validity(
    certs: &[LoadedCert],
    now: SystemTime,
    purpose: Purpose<'_>,
) -> Result<Vec<Warning>, TlsError> {
    let expired = |c: &LoadedCert| c.info.time_left(now).is_none();
    let early = |c: &LoadedCert| c.info.not_before > now;
    let outside = certs
        .iter()
        .filter(|c| expired(c))
        .chain(certs.iter().filter(|c| !expired(c) && early(c)));
    let mut warnings = Vec::new();
    for c in outside {
        let not_after = humantime::format_rfc3339_seconds(c.info.not_after).to_string();
        let not_before = humantime::format_rfc3339_seconds(c.info.not_before).to_string();
        let refuse = match purpose {
            Purpose::Start => false,
            Purpose::Check => true,
            // Same bytes as a certificate in service: refusing would change nothing for its
            // clients and would block every other renewal until this one is fixed.
            Purpose::Reload { serving } => !serving
                .iter()
                .any(|s| s.certified.cert.first() == c.certified.cert.first()),
        };
        if refuse {
            return Err(if expired(c) {
                TlsError::Expired {
                    path: c.path.clone(),
                    not_after,
                }
            } else {
                TlsError::NotYetValid {
                    path: c.path.clone(),
                    not_before,
                }
            });
        }
        warnings.push(Warning::OutsideValidity {
            path: c.path.clone(),
            subject: c.info.subject.clone(),
            problem: if expired(c) {
                format!("expired at {not_after}")
            } else {
                format!("is not valid before {not_before}")
            },
            expired: expired(c),
        });
    }
    Ok(warnings)
}

/// The certificate a client connecting to `listener.public_url` is given must cover its host.
/// The resolver decides which one that is: an SNI entry naming the host, else the default;
/// clients send no SNI for an IP address, so an IP host always gets the default certificate,
/// which must then carry that address as an IP SAN.
fn check_public_host(
    cfg: &Config,
    resolver: &crate::tls::SniResolver,
    certs: &[LoadedCert],
) -> Result<(), TlsError> {
    let Some(host) = cfg.listener.public_url.host() else {
        // Config validation requires a host; nothing to check without one.
        return Ok(());
    };
    let bare = host.trim_matches(['[', ']']);
    let ip = bare.parse::<std::net::IpAddr>().ok();
    // rustls lower-cases SNI names and drops a trailing dot; look the host up the same way.
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    let picked = resolver.pick(if ip.is_some() { None } else { Some(&name) });
    let Some(cert) = certs
        .iter()
        .find(|c| Arc::ptr_eq(&c.certified, &picked))
        .or(certs.first())
    else {
        return Ok(());
    };
    let covered = match ip {
        Some(ip) => cert.info.ip_names.contains(&ip),
        None => cert.info.covers(&name),
    };
    if covered {
        return Ok(());
    }
    let names: Vec<String> = (cert.info.dns_names.iter().cloned())
        .chain(cert.info.ip_names.iter().map(ToString::to_string))
        .collect();
    Err(TlsError::HostNotCovered {
        path: cert.path.clone(),
        host: bare.to_owned(),
        names: names.join(", "),
    })
}

/// Every listener-side TLS file of `cfg`: server certificates and keys, client CA, CRLs.
pub fn listener_files(cfg: &Config) -> Vec<PathBuf> {
    let tls = &cfg.listener.tls;
    let mut files = vec![tls.cert.clone(), tls.key.clone()];
    for s in &tls.sni {
        files.push(s.cert.clone());
        files.push(s.key.clone());
    }
    files.extend(tls.client_auth.ca.iter().cloned());
    files.extend(tls.client_auth.crls.iter().cloned());
    files
}

/// Every upstream TLS file of `cfg` (CA bundles, client certificates and keys).
pub fn upstream_files(cfg: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for r in &cfg.routes {
        if let Some(t) = &r.upstream.tls {
            files.push(t.ca.clone());
            files.extend(t.client_cert.iter().cloned());
            files.extend(t.client_key.iter().cloned());
        }
    }
    files
}

/// SHA-256 over the names and contents of `files`. An unreadable file counts as a change
/// (marked, not an error here): the loaders that run next report it with its config key.
pub(crate) fn digest_files(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for path in files {
        ctx.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(bytes) => {
                ctx.update(&[1]);
                ctx.update(&(bytes.len() as u64).to_be_bytes());
                ctx.update(&bytes);
            }
            Err(_) => ctx.update(&[0]),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests;
