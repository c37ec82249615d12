//! The certificate expiry alert engine against a real HTTPS webhook receiver (hyper behind
//! tokio-rustls on 127.0.0.1:0, with its own rcgen CA) and a real command hook. Time is driven
//! by passing `now` to `Alerter::check`, so "two hours later" takes no time.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_edge::certs::alerts::{AlertStats, Alerter};
use mcp_edge::certs::inventory::{self, CertStatus, Level};
use mcp_edge::config::{CertsSettings, WebhookSettings};
use mcp_edge::demo::pki::DevCa;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    content_type: Option<String>,
    body: Value,
}

/// A local HTTPS webhook receiver with its own CA.
struct Receiver {
    url: String,
    ca: PathBuf,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(dir: &Path) -> Receiver {
        support::init();
        let ca_path = dir.join("webhook-ca.pem");
        let acceptor =
            support::https::acceptor("webhook receiver CA", &ca_path, &[b"h2", b"http/1.1"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (g, s, d) = (got.clone(), status.clone(), delay_ms.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (g, s, d) = (g.clone(), s.clone(), d.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (g, s, d) = (g.clone(), s.clone(), d.clone());
                        async move {
                            let method = req.method().to_string();
                            let content_type = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await?.to_bytes();
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            g.lock().unwrap().push(Received {
                                method,
                                content_type,
                                body,
                            });
                            let delay = d.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *resp.status_mut() =
                                http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("https://127.0.0.1:{}/hooks/mcp-edge", addr.port()),
            ca: ca_path,
            got,
            status,
            delay_ms,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// `[certs]` with the default thresholds (30 d / 7 d) and a one-hour alert interval.
fn settings(webhook: Option<&Receiver>, command: Vec<String>) -> CertsSettings {
    CertsSettings {
        watch: false,
        rescan_interval: Duration::from_secs(300),
        warn_before: 30 * DAY,
        critical_before: 7 * DAY,
        alert_interval: HOUR,
        webhook: webhook.map(|r| WebhookSettings {
            url: r.url.parse().expect("url"),
            ca: Some(r.ca.clone()),
            timeout: Duration::from_secs(5),
        }),
        command,
    }
}

/// Writes `{stem}.pem`/`{stem}.key`: a self-signed certificate valid until `not_after`.
fn write_cert(dir: &Path, stem: &str, cn: &str, not_after: SystemTime) -> PathBuf {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![cn.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = (SystemTime::now() - DAY).into();
    params.not_after = not_after.into();
    let cert = params.self_signed(&key).expect("cert");
    let path = dir.join(format!("{stem}.pem"));
    std::fs::write(&path, cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write key");
    path
}

/// A config serving `server.pem` and, if given, `sni.pem` for `api.example`.
fn config(dir: &Path, with_sni: bool) -> mcp_edge::config::Config {
    let sni = if with_sni {
        "[[listener.tls.sni]]\nnames = [\"api.example\"]\ncert = \"sni.pem\"\nkey = \"sni.key\"\n"
    } else {
        ""
    };
    let text = format!(
        r#"
[listener]
bind = "127.0.0.1:0"
public_url = "https://edge.example"
[listener.tls]
cert = "server.pem"
key = "server.key"
{sni}
[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
"#
    );
    mcp_edge::config::parse(&text, Path::new("test.toml"), dir).expect("config")
}

/// A config whose only certificate, `server.pem`, expires `left` after `now`.
fn one_cert(dir: &Path, left: Duration, now: SystemTime) -> (mcp_edge::config::Config, PathBuf) {
    let path = write_cert(dir, "server", "edge.example", now + left);
    let cfg = config(dir, false);
    assert_eq!(inventory::inventory(&cfg, now).len(), 1);
    (cfg, path)
}

fn stats(sent: u64, failed: u64, suppressed: u64) -> AlertStats {
    AlertStats {
        sent,
        failed,
        suppressed,
    }
}

#[tokio::test]
async fn critical_certificate_alerts_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    let (cfg, path) = one_cert(dir.path(), 2 * DAY + HOUR, now);
    let alerter = Alerter::new(&settings(Some(&rx), vec![]))
        .unwrap()
        .with_hostname("edge-1");

    let statuses = inventory::inventory(&cfg, now);
    assert_eq!(statuses[0].level, Level::Critical);
    alerter.check(&statuses, now).await;
    let got = rx.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].content_type.as_deref(), Some("application/json"));
    let body = &got[0].body;
    assert_eq!(body["source"], "mcp-edge");
    assert_eq!(body["level"], "critical");
    assert_eq!(body["kind"], "server_leaf");
    assert_eq!(body["config_key"], "listener.tls.cert");
    assert_eq!(body["path"], path.display().to_string());
    assert_eq!(body["subject"], "CN=edge.example");
    assert_eq!(body["hostname"], "edge-1");
    assert_eq!(
        body["not_after"].as_str(),
        statuses[0].not_after_rfc3339().as_deref()
    );
    let secs = body["seconds_left"].as_i64().unwrap();
    assert_eq!(secs, statuses[0].seconds_left);
    assert!((2 * 86_400..2 * 86_400 + 3_600).contains(&secs), "{secs}");
    assert!(body.get("error").is_none(), "{body}");
    assert_eq!(alerter.stats(), stats(1, 0, 0));

    // Ten minutes later: the same alert is held back.
    let later = now + 10 * MINUTE;
    alerter
        .check(&inventory::inventory(&cfg, later), later)
        .await;
    assert_eq!(rx.received().len(), 1);
    assert_eq!(alerter.stats(), stats(1, 0, 1));

    // Two hours later the interval is over: sent again.
    let later = now + 2 * HOUR;
    alerter
        .check(&inventory::inventory(&cfg, later), later)
        .await;
    let got = rx.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body["level"], "critical");
    assert_eq!(alerter.stats(), stats(2, 0, 1));
}

#[tokio::test]
async fn ok_certificates_send_nothing_and_duplicates_send_once() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    write_cert(dir.path(), "server", "edge.example", now + 100 * DAY);
    write_cert(dir.path(), "sni", "api.example", now - HOUR);
    let cfg = config(dir.path(), true);
    let alerter = Alerter::new(&settings(Some(&rx), vec![])).unwrap();

    let mut statuses = inventory::inventory(&cfg, now);
    assert_eq!(statuses[0].level, Level::Ok);
    assert_eq!(statuses[1].level, Level::Expired);
    // The same file named by a second key is one certificate: one alert.
    let mut again = statuses[1].clone();
    again.source = "listener.tls.sni[1].cert".into();
    statuses.push(again);
    alerter.check(&statuses, now).await;
    let got = rx.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body["level"], "expired");
    assert_eq!(got[0].body["config_key"], "listener.tls.sni[0].cert");
    assert!(got[0].body["seconds_left"].as_i64().unwrap() < 0);
    assert_eq!(alerter.stats(), stats(1, 0, 0));
}

#[tokio::test]
async fn level_change_alerts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    // Warning now, critical 40 minutes from now (less than the one-hour interval).
    let (cfg, _) = one_cert(dir.path(), 7 * DAY + 30 * MINUTE, now);
    let alerter = Alerter::new(&settings(Some(&rx), vec![])).unwrap();

    alerter.check(&inventory::inventory(&cfg, now), now).await;
    let t1 = now + 20 * MINUTE;
    alerter.check(&inventory::inventory(&cfg, t1), t1).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["level"], "warning");
    assert_eq!(alerter.stats(), stats(1, 0, 1));

    let t2 = now + 40 * MINUTE;
    let statuses = inventory::inventory(&cfg, t2);
    assert_eq!(statuses[0].level, Level::Critical);
    alerter.check(&statuses, t2).await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "a new level is sent at once");
    assert_eq!(got[1].body["level"], "critical");

    let t3 = now + 50 * MINUTE;
    alerter.check(&inventory::inventory(&cfg, t3), t3).await;
    assert_eq!(rx.received().len(), 2);
    assert_eq!(alerter.stats(), stats(2, 0, 2));
}

#[tokio::test]
async fn failed_webhook_is_counted_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    let (cfg, _) = one_cert(dir.path(), 2 * DAY, now);
    let alerter = Alerter::new(&settings(Some(&rx), vec![])).unwrap();
    let statuses = inventory::inventory(&cfg, now);

    rx.status.store(500, Ordering::SeqCst);
    alerter.check(&statuses, now).await;
    assert_eq!(rx.received().len(), 1);
    assert_eq!(alerter.stats(), stats(0, 1, 0));

    // Not marked delivered: the next check (well within the interval) tries again.
    alerter.check(&statuses, now + MINUTE).await;
    assert_eq!(rx.received().len(), 2);
    assert_eq!(alerter.stats(), stats(0, 2, 0));

    rx.status.store(204, Ordering::SeqCst);
    alerter.check(&statuses, now + 2 * MINUTE).await;
    assert_eq!(rx.received().len(), 3);
    assert_eq!(alerter.stats(), stats(1, 2, 0));

    alerter.check(&statuses, now + 3 * MINUTE).await;
    assert_eq!(rx.received().len(), 3);
    assert_eq!(alerter.stats(), stats(1, 2, 1));
}

#[tokio::test]
async fn slow_webhook_times_out_and_counts_failed() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    let (cfg, _) = one_cert(dir.path(), 2 * DAY, now);
    let mut s = settings(Some(&rx), vec![]);
    if let Some(w) = &mut s.webhook {
        w.timeout = Duration::from_millis(300);
    }
    let alerter = Alerter::new(&s).unwrap();
    rx.delay_ms.store(3_000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    alerter.check(&inventory::inventory(&cfg, now), now).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(alerter.stats(), stats(0, 1, 0));
}

#[tokio::test]
async fn webhook_requires_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    let (cfg, _) = one_cert(dir.path(), 2 * DAY, now);
    // Trust some other CA: the receiver's certificate must be refused.
    let other = DevCa::new("someone else").unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    let mut s = settings(Some(&rx), vec![]);
    if let Some(w) = &mut s.webhook {
        w.ca = Some(other_ca);
    }
    let alerter = Alerter::new(&s).unwrap();
    alerter.check(&inventory::inventory(&cfg, now), now).await;
    assert!(rx.received().is_empty());
    assert_eq!(alerter.stats(), stats(0, 1, 0));

    // An unreadable CA file is a setup error naming the key.
    if let Some(w) = &mut s.webhook {
        w.ca = Some(dir.path().join("absent.pem"));
    }
    let err = Alerter::new(&s).unwrap_err().to_string();
    assert!(
        err.contains("certs.webhook.ca") && err.contains("absent.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn command_hook_gets_the_alert_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (cfg, path) = one_cert(dir.path(), 2 * DAY, now);
    let out = dir.path().join("env.txt");
    let command = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        "env > \"$1\"".to_owned(),
        "sh".to_owned(),
        out.display().to_string(),
    ];
    let alerter = Alerter::new(&settings(None, command)).unwrap();
    let statuses = inventory::inventory(&cfg, now);
    alerter.check(&statuses, now).await;
    assert_eq!(alerter.stats(), stats(1, 0, 0));

    let env = std::fs::read_to_string(&out).expect("the command ran");
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{env}"))
            .to_owned()
    };
    assert_eq!(var("MCP_EDGE_ALERT_LEVEL"), "critical");
    assert_eq!(var("MCP_EDGE_ALERT_PATH"), path.display().to_string());
    assert_eq!(var("MCP_EDGE_ALERT_SUBJECT"), "CN=edge.example");
    assert_eq!(var("MCP_EDGE_ALERT_SOURCE"), "listener.tls.cert");
    assert_eq!(
        Some(var("MCP_EDGE_ALERT_NOT_AFTER")),
        statuses[0].not_after_rfc3339()
    );
    assert_eq!(
        var("MCP_EDGE_ALERT_SECONDS_LEFT"),
        statuses[0].seconds_left.to_string()
    );

    // Within the interval the command is not run again.
    std::fs::remove_file(&out).unwrap();
    alerter.check(&statuses, now + MINUTE).await;
    assert!(!out.exists());
    assert_eq!(alerter.stats(), stats(1, 0, 1));
}

#[tokio::test]
async fn failing_or_hanging_commands_count_failed() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (cfg, _) = one_cert(dir.path(), 2 * DAY, now);
    let statuses = inventory::inventory(&cfg, now);
    let sh = |script: &str| vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];

    let failing = Alerter::new(&settings(None, sh("echo paging failed >&2; exit 3"))).unwrap();
    failing.check(&statuses, now).await;
    assert_eq!(failing.stats(), stats(0, 1, 0));
    // Retried at the next check.
    failing.check(&statuses, now + MINUTE).await;
    assert_eq!(failing.stats(), stats(0, 2, 0));

    let hanging = Alerter::new(&settings(None, sh("sleep 30")))
        .unwrap()
        .with_command_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    hanging.check(&statuses, now).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(hanging.stats(), stats(0, 1, 0));

    let missing = Alerter::new(&settings(None, vec!["/nonexistent/pager".to_owned()])).unwrap();
    missing.check(&statuses, now).await;
    assert_eq!(missing.stats(), stats(0, 1, 0));
}

#[tokio::test]
async fn unreadable_file_alerts_as_critical_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    std::fs::write(dir.path().join("server.pem"), "garbage").unwrap();
    let cfg = config(dir.path(), false);
    let statuses: Vec<CertStatus> = inventory::inventory(&cfg, now);
    assert_eq!(statuses[0].level, Level::Critical);
    let alerter = Alerter::new(&settings(Some(&rx), vec![])).unwrap();
    alerter.check(&statuses, now).await;
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["level"], "critical");
    assert_eq!(got[0].body["not_after"], Value::Null);
    assert!(
        got[0].body["error"]
            .as_str()
            .unwrap()
            .contains("no usable PEM certificate"),
        "{:?}",
        got[0].body
    );
}

#[tokio::test]
async fn rebuilt_alerter_keeps_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path()).await;
    let now = SystemTime::now();
    let (cfg, _) = one_cert(dir.path(), 2 * DAY, now);
    let statuses = inventory::inventory(&cfg, now);
    let first = Alerter::new(&settings(Some(&rx), vec![])).unwrap();
    first.check(&statuses, now).await;

    let second = Alerter::new(&settings(Some(&rx), vec![])).unwrap();
    second.adopt_state(&first).await;
    second.check(&statuses, now + MINUTE).await;
    assert_eq!(rx.received().len(), 1);
    assert_eq!(second.stats(), stats(0, 0, 1));
}
