//! Expiry alerts: turns an [`inventory`](super::inventory) into log events and notifications.
//!
//! [`Alerter::check`] is called periodically by the app (and by tests with a made-up clock).
//! Every entry at warning, critical or expired produces an error or warning log event and runs
//! the configured hooks: an HTTPS webhook (JSON POST) and/or a command. Each channel is sent at
//! most once per `certs.alert_interval` for the same certificate at the same level; a change of
//! level (warning → critical → expired) is sent at once. A hook that fails (non-2xx, timeout,
//! spawn error, non-zero exit) is not marked delivered, so the next check retries it; the other
//! channels are not repeated because of it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;

use super::CertError;
use super::inventory::{CertKind, CertStatus, Level};

/// Deadline for one run of the alert command before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a failed command's output is quoted in the log.
const MAX_OUTPUT_LOGGED: usize = 512;

/// Why the alert engine could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AlertSetupError {
    /// `certs.webhook.ca` is unusable.
    #[error("certs.webhook.ca: {0}")]
    Ca(#[from] CertError),
    /// No CA bundle configured and no system bundle found.
    #[error(
        "certs.webhook: no `ca` configured and no system CA bundle found (SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt …); set certs.webhook.ca"
    )]
    NoSystemRoots,
    /// rustls rejected the client configuration.
    #[error("certs.webhook: TLS client configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why one notification was not delivered.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("receiver answered {0}; expected a 2xx status")]
    Status(http::StatusCode),
    #[error("cannot start `{program}`: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("`{program}` failed ({status}){output}")]
    Exit {
        program: String,
        status: String,
        output: String,
    },
}

/// Alert counters since the [`Alerter`] was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// Notifications delivered (webhook 2xx answers and command runs that exited 0).
    pub sent: u64,
    /// Notifications that failed (retried on the next check).
    pub failed: u64,
    /// Alerts held back because the same one went out less than `alert_interval` ago.
    pub suppressed: u64,
}

/// Which certificate an alert is about. `not_after` tells apart certificates that share a
/// subject in one file, e.g. an old and a new CA during a rotation overlap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AlertKey {
    path: PathBuf,
    subject: String,
    not_after: Option<SystemTime>,
}

/// When each channel last carried an alert for one certificate at `level`.
#[derive(Debug, Clone)]
struct Sent {
    level: Level,
    logged: Option<SystemTime>,
    webhook: Option<SystemTime>,
    command: Option<SystemTime>,
}

impl Sent {
    fn new(level: Level) -> Self {
        Sent {
            level,
            logged: None,
            webhook: None,
            command: None,
        }
    }
}

type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Webhook {
    url: Uri,
    timeout: Duration,
    client: WebhookClient,
}

/// The expiry alert engine: log events, webhook and command, with repeat suppression.
pub struct Alerter {
    interval: Duration,
    webhook: Option<Webhook>,
    command: Vec<String>,
    command_timeout: Duration,
    hostname: String,
    // A tokio mutex held for the whole check: two overlapping checks must not both decide
    // that the same alert is due and send it twice.
    state: tokio::sync::Mutex<HashMap<AlertKey, Sent>>,
    sent: AtomicU64,
    failed: AtomicU64,
    suppressed: AtomicU64,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("interval", &self.interval)
            .field("webhook", &self.webhook.as_ref().map(|w| w.url.to_string()))
            .field("command", &self.command)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The webhook's JSON body.
#[derive(Serialize)]
struct WebhookBody<'a> {
    source: &'static str,
    level: Level,
    kind: CertKind,
    config_key: &'a str,
    path: String,
    subject: &'a str,
    not_after: Option<String>,
    seconds_left: i64,
    hostname: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// One alert to deliver, prepared while the state lock decided what is due.
struct Job {
    key: AlertKey,
    body: Option<Bytes>,
    env: Option<Vec<(&'static str, String)>>,
    label: String,
}

impl Alerter {
    /// Builds the engine from `[certs]`; loads the webhook CA (or the system bundle).
    pub fn new(settings: &CertsSettings) -> Result<Self, AlertSetupError> {
        let webhook = match &settings.webhook {
            Some(w) => Some(Webhook {
                url: w.url.clone(),
                timeout: w.timeout,
                client: build_client(w.ca.as_deref(), w.timeout)?,
            }),
            None => None,
        };
        Ok(Alerter {
            interval: settings.alert_interval,
            webhook,
            command: settings.command.clone(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            hostname: hostname(),
            state: tokio::sync::Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        })
    }

    /// Replaces [`DEFAULT_COMMAND_TIMEOUT`] for the alert command.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Replaces the host name reported in alerts (default: the kernel's host name).
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> AlertStats {
        AlertStats {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            suppressed: self.suppressed.load(Ordering::Relaxed),
        }
    }

    /// Takes over what `previous` already sent, so rebuilding on a config reload does not
    /// repeat alerts before their interval is up.
    pub async fn adopt_state(&self, previous: &Alerter) {
        let old = previous.state.lock().await.clone();
        let mut state = self.state.lock().await;
        for (key, sent) in old {
            state.entry(key).or_insert(sent);
        }
    }

    /// Logs and notifies about every entry of `statuses` that is not [`Level::Ok`] and is due
    /// at `now`. Pass the whole inventory: certificates missing from it are forgotten, so they
    /// alert at once if they come back.
    pub async fn check(&self, statuses: &[CertStatus], now: SystemTime) {
        let mut state = self.state.lock().await;
        let mut seen = HashSet::new();
        let mut active = HashSet::new();
        let mut jobs = Vec::new();
        for s in statuses {
            let key = AlertKey {
                path: s.path.clone(),
                subject: s.subject.clone(),
                not_after: s.not_after,
            };
            // The same file is often named by several keys (one upstream CA for every
            // route): one certificate, one alert.
            if !seen.insert(key.clone()) || s.level == Level::Ok {
                continue;
            }
            active.insert(key.clone());
            let sent = state
                .entry(key.clone())
                .or_insert_with(|| Sent::new(s.level));
            if sent.level != s.level {
                *sent = Sent::new(s.level);
            }
            let log_due = self.due(sent.logged, now);
            let webhook_due = self.webhook.is_some() && self.due(sent.webhook, now);
            let command_due = !self.command.is_empty() && self.due(sent.command, now);
            if !log_due && !webhook_due && !command_due {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if log_due {
                log_event(s);
                sent.logged = Some(now);
            }
            jobs.push(Job {
                key,
                body: webhook_due.then(|| self.webhook_body(s)),
                env: command_due.then(|| self.command_env(s)),
                label: format!("{} ({})", s.source, s.path.display()),
            });
        }
        // Back to ok, replaced or no longer configured: a later problem alerts at once.
        state.retain(|k, _| active.contains(k));
        // Deliveries run concurrently so one slow receiver does not delay every alert by
        // its timeout; the lock stays held so a concurrent check waits for the outcome.
        let results = futures_util::future::join_all(jobs.into_iter().map(|job| async move {
            let (webhook, command) = tokio::join!(
                async {
                    match &job.body {
                        Some(body) => Some(self.post(body.clone()).await),
                        None => None,
                    }
                },
                async {
                    match &job.env {
                        Some(env) => Some(self.run_command(env).await),
                        None => None,
                    }
                }
            );
            (job, webhook, command)
        }))
        .await;
        for (job, webhook, command) in results {
            let webhook_ok = webhook.is_some_and(|r| self.record(r, "webhook", &job.label));
            let command_ok = command.is_some_and(|r| self.record(r, "command", &job.label));
            if let Some(s) = state.get_mut(&job.key) {
                if webhook_ok {
                    s.webhook = Some(now);
                }
                if command_ok {
                    s.command = Some(now);
                }
            }
        }
    }

    /// Counts one delivery and logs a failure; true when it was delivered.
    fn record(&self, result: Result<(), DeliveryError>, channel: &str, label: &str) -> bool {
        match result {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let target = match channel {
                    "webhook" => self.webhook.as_ref().map(|w| w.url.to_string()),
                    _ => self.command.first().cloned(),
                };
                tracing::error!(
                    certificate = %label,
                    channel,
                    target = target.unwrap_or_default(),
                    "certificate alert {channel} failed, retrying at the next check: {e}"
                );
                false
            }
        }
    }

    /// Whether a channel last used at `last` may carry the alert again at `now`.
    fn due(&self, last: Option<SystemTime>, now: SystemTime) -> bool {
        match last {
            None => true,
            // A clock that went backwards repeats an alert rather than silencing it.
            Some(t) => !matches!(now.duration_since(t), Ok(d) if d < self.interval),
        }
    }

    fn webhook_body(&self, s: &CertStatus) -> Bytes {
        let body = WebhookBody {
            source: "mcp-edge",
            level: s.level,
            kind: s.kind,
            config_key: &s.source,
            path: s.path.display().to_string(),
            subject: &s.subject,
            not_after: s.not_after_rfc3339(),
            seconds_left: s.seconds_left,
            hostname: &self.hostname,
            error: s.error.as_deref(),
        };
        // Serialising plain strings and numbers cannot fail; an empty body would be refused
        // by the receiver and show up as a failed delivery rather than a panic.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    fn command_env(&self, s: &CertStatus) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MCP_EDGE_ALERT_LEVEL", s.level.as_str().to_owned()),
            ("MCP_EDGE_ALERT_KIND", s.kind.as_str().to_owned()),
            ("MCP_EDGE_ALERT_SOURCE", s.source.clone()),
            ("MCP_EDGE_ALERT_PATH", s.path.display().to_string()),
            ("MCP_EDGE_ALERT_SUBJECT", s.subject.clone()),
            (
                "MCP_EDGE_ALERT_NOT_AFTER",
                s.not_after_rfc3339().unwrap_or_default(),
            ),
            ("MCP_EDGE_ALERT_SECONDS_LEFT", s.seconds_left.to_string()),
            ("MCP_EDGE_ALERT_HOSTNAME", self.hostname.clone()),
        ];
        if let Some(e) = &s.error {
            env.push(("MCP_EDGE_ALERT_ERROR", e.clone()));
        }
        env
    }

    async fn post(&self, body: Bytes) -> Result<(), DeliveryError> {
        let Some(w) = &self.webhook else {
            return Ok(());
        };
        let req = http::Request::post(w.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("mcp-edge/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let resp = tokio::time::timeout(w.timeout, w.client.request(req))
            .await
            .map_err(|_| DeliveryError::Timeout(w.timeout))?
            .map_err(|e| DeliveryError::Request(error_chain(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(resp.status()))
        }
    }

    async fn run_command(&self, env: &[(&'static str, String)]) -> Result<(), DeliveryError> {
        let Some((program, args)) = self.command.split_first() else {
            return Ok(());
        };
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A command past its deadline is dropped with the timed-out future: kill it
            // rather than leave it running behind the proxy's back.
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| DeliveryError::Spawn {
                program: program.clone(),
                error,
            })?;
        let output = tokio::time::timeout(self.command_timeout, child.wait_with_output())
            .await
            .map_err(|_| DeliveryError::Timeout(self.command_timeout))?
            .map_err(|error| DeliveryError::Spawn {
                program: program.clone(),
                error,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        if text.len() > MAX_OUTPUT_LOGGED {
            let mut cut = MAX_OUTPUT_LOGGED;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        Err(DeliveryError::Exit {
            program: program.clone(),
            status: output.status.to_string(),
            output: if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            },
        })
    }
}

/// The log event for one due alert: warn for warnings, error for critical and expired.
fn log_event(s: &CertStatus) {
    let days_left = s.days_left();
    let not_after = s.not_after_rfc3339().unwrap_or_default();
    let path = s.path.display();
    let what = match (s.kind, s.level, &s.error) {
        (_, _, Some(_)) => "certificate file is unusable",
        (CertKind::Crl, Level::Expired, _) => "CRL is past its nextUpdate",
        (CertKind::Crl, _, _) => "CRL nextUpdate is near; fetch a fresh CRL",
        (_, Level::Expired, _) => "certificate has expired",
        _ => "certificate expires soon",
    };
    let error = s.error.as_deref().unwrap_or_default();
    match s.level {
        Level::Ok => {}
        Level::Warning => tracing::warn!(
            path = %path, subject = %s.subject, source = %s.source, kind = s.kind.as_str(),
            days_left, not_after = %not_after, level = s.level.as_str(), error,
            "{what}"
        ),
        Level::Critical | Level::Expired => tracing::error!(
            path = %path, subject = %s.subject, source = %s.source, kind = s.kind.as_str(),
            days_left, not_after = %not_after, level = s.level.as_str(), error,
            "{what}"
        ),
    }
}

/// The error and its sources on one line (hyper's top-level message alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        cur = inner.source();
    }
    out
}

/// The machine's host name, for receivers that collect alerts from many proxies.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .chain(std::env::var("HOSTNAME").ok())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn build_client(ca: Option<&Path>, timeout: Duration) -> Result<WebhookClient, AlertSetupError> {
    let roots = match ca {
        Some(path) => super::load_ca_bundle(path)?,
        None => super::system_roots().map_err(|e| match e {
            super::SystemRootsError::Ca(e) => AlertSetupError::Ca(e),
            super::SystemRootsError::NotFound => AlertSetupError::NoSystemRoots,
        })?,
    };
    Ok(crate::http::client::https_client(roots, timeout, 1)?)
}

/// Validated `[certs]`.
#[derive(Debug, Clone)]
pub struct CertsSettings {
    /// Watch files and reload on change.
    pub watch: bool,
    /// Periodic reload check.
    pub rescan_interval: Duration,
    /// Warning threshold.
    pub warn_before: Duration,
    /// Critical threshold.
    pub critical_before: Duration,
    /// Least time between repeated alerts.
    pub alert_interval: Duration,
    /// Webhook receiver.
    pub webhook: Option<WebhookSettings>,
    /// Alert command (program first); empty = none.
    pub command: Vec<String>,
}

/// Validated `[certs.webhook]`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `https://` URL.
    pub url: Uri,
    /// CA bundle; `None` = system bundle.
    pub ca: Option<PathBuf>,
    /// Delivery deadline.
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerter(interval: Duration) -> Alerter {
        let settings = CertsSettings {
            watch: false,
            rescan_interval: Duration::from_secs(300),
            warn_before: Duration::from_secs(30 * 86_400),
            critical_before: Duration::from_secs(7 * 86_400),
            alert_interval: interval,
            webhook: None,
            command: Vec::new(),
        };
        Alerter::new(&settings).unwrap()
    }

    #[test]
    fn due_after_the_interval_or_when_the_clock_goes_back() {
        let a = alerter(Duration::from_secs(3_600));
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(a.due(None, t));
        assert!(!a.due(Some(t), t));
        assert!(!a.due(Some(t), t + Duration::from_secs(3_599)));
        assert!(a.due(Some(t), t + Duration::from_secs(3_600)));
        assert!(a.due(Some(t), t - Duration::from_secs(1)));
    }

    #[test]
    fn hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
