//! Certificate rotation and config reload on a running proxy: certificates replaced by
//! in-place write, by rename and by a Kubernetes-style `..data` symlink swap while an SSE
//! stream is open and requests keep running; broken replacements refused with the old
//! certificate still served; CRL updates; config reloads that apply or change nothing.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mcp_edge::app::{self, Running};
use mcp_edge::demo::pki::{DevCa, IssuedCert};
use support::raw;
use support::tls::{self, der};

/// A proxy started from a config file, with its certificate files in `dir`.
struct Live {
    running: Running,
    dir: tempfile::TempDir,
    ca: DevCa,
    config: PathBuf,
    _backend: raw::RawBackend,
    stream_tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.running.shutdown.force();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Config text; `tls_dir` is where `server.pem`/`server.key` are read from.
fn config_text(tls_dir: &Path, backend: std::net::SocketAddr, extra_route: &str) -> String {
    format!(
        r#"[listener]
bind = "127.0.0.1:0"
public_url = "https://localhost:8443"
[listener.tls]
cert = "{dir}/server.pem"
key = "{dir}/server.key"
[admin]
bind = "127.0.0.1:0"
[certs]
rescan_interval = "1h"
[[routes]]
path = "/mcp"
upstream = "http://{backend}/mcp"
{extra_route}"#,
        dir = tls_dir.display()
    )
}

async fn start(tls_subdir: &str) -> Live {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("reload test CA").unwrap();
    let tls_dir = dir.path().join(tls_subdir);
    std::fs::create_dir_all(&tls_dir).unwrap();
    let first = ca.issue_server(&["localhost"]).unwrap();
    write(&tls_dir.join("server.pem"), &first.cert_pem);
    write(&tls_dir.join("server.key"), &first.key_pem);
    let (stream_tx, stream_body) = raw::channel_body();
    let stream_body = Arc::new(std::sync::Mutex::new(Some(stream_body)));
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let stream_body = stream_body.clone();
        async move {
            if req.method() == http::Method::GET
                && let Some(body) = stream_body.lock().unwrap().take()
            {
                return raw::sse(body);
            }
            http::Response::builder()
                .header("content-type", "application/json")
                .body(raw::full(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"path":"{}"}}}}"#,
                    req.uri().path()
                )))
                .unwrap()
        }
    })
    .await;
    let config = dir.path().join("mcp-edge.toml");
    write(&config, &config_text(&tls_dir, backend.addr, ""));
    let cfg = mcp_edge::config::load(&config).unwrap();
    let running = app::start(cfg).await.unwrap();
    Live {
        running,
        dir,
        ca,
        config,
        _backend: backend,
        stream_tx,
    }
}

impl Live {
    fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    fn client(&self) -> reqwest::Client {
        support::trusting(self.ca_pem())
            .resolve("localhost", self.running.addr)
            .http1_only()
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.running.addr.port())
    }

    /// The leaf certificate a new handshake is given.
    async fn presented(&self) -> Vec<u8> {
        tls::presented(self.running.addr, self.ca_pem()).await
    }

    /// Waits until new handshakes present `cert` (the watcher debounces and reloads).
    async fn wait_for(&self, cert: &IssuedCert) {
        let want = der(&cert.cert_pem);
        for _ in 0..100 {
            if self.presented().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the new certificate was not picked up");
    }
}

/// Keeps POSTing until stopped; counts failures.
fn load(live: &Live, stop: Arc<AtomicBool>, failures: Arc<AtomicU64>, ok: Arc<AtomicU64>) {
    let client = live.client();
    let url = live.url("/mcp");
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match client.post(&url).body(support::PING).send().await {
                Ok(r) if r.status() == 200 => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    eprintln!("request failed: {other:?}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
}

#[tokio::test]
async fn rotation_by_write_rename_and_symlink_swap_drops_nothing() {
    let live = start("plain").await;
    let tls = live.dir.path().join("plain");

    // An SSE stream opened before any rotation.
    let mut stream = live
        .client()
        .get(live.url("/mcp"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    load(&live, stop.clone(), failures.clone(), ok.clone());

    let mut event = 0;
    let mut expect_event = async |stream: &mut reqwest::Response,
                                  tx: &tokio::sync::mpsc::Sender<_>| {
        event += 1;
        tx.send(Ok(bytes::Bytes::from(format!(
            "id: {event}\ndata: {{\"n\":{event}}}\n\n"
        ))))
        .await
        .unwrap();
        let mut got = String::new();
        while !got.contains(&format!("\"n\":{event}")) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
                .await
                .expect("the open stream keeps receiving events")
                .unwrap()
                .expect("stream still open");
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    expect_event(&mut stream, &live.stream_tx).await;

    // 1. In-place write (cert and key rewritten in place).
    let second = live.ca.issue_server(&["localhost"]).unwrap();
    write(&tls.join("server.key"), &second.key_pem);
    write(&tls.join("server.pem"), &second.cert_pem);
    live.wait_for(&second).await;
    expect_event(&mut stream, &live.stream_tx).await;

    // 2. Write-then-rename (atomic replace, as most tools do).
    let third = live.ca.issue_server(&["localhost"]).unwrap();
    write(&tls.join(".server.pem.tmp"), &third.cert_pem);
    write(&tls.join(".server.key.tmp"), &third.key_pem);
    std::fs::rename(tls.join(".server.key.tmp"), tls.join("server.key")).unwrap();
    std::fs::rename(tls.join(".server.pem.tmp"), tls.join("server.pem")).unwrap();
    live.wait_for(&third).await;
    expect_event(&mut stream, &live.stream_tx).await;

    // 3. Kubernetes Secret volume: files are symlinks through `..data`, and an update renames
    // a new `..data` symlink over the old one. Move the config onto such a mount first
    // (a config reload, itself done with the stream open).
    let mount = live.dir.path().join("mount");
    let gen1 = mount.join("..2026_11_23_01");
    std::fs::create_dir_all(&gen1).unwrap();
    let fourth = live.ca.issue_server(&["localhost"]).unwrap();
    write(&gen1.join("server.pem"), &fourth.cert_pem);
    write(&gen1.join("server.key"), &fourth.key_pem);
    std::os::unix::fs::symlink("..2026_11_23_01", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/server.pem", mount.join("server.pem")).unwrap();
    std::os::unix::fs::symlink("..data/server.key", mount.join("server.key")).unwrap();
    let text = std::fs::read_to_string(&live.config)
        .unwrap()
        .replace(&tls.display().to_string(), &mount.display().to_string());
    write(&live.config, &text);
    live.running.reloader.reload_config().await.unwrap();
    live.wait_for(&fourth).await;
    expect_event(&mut stream, &live.stream_tx).await;

    let gen2 = mount.join("..2026_11_23_02");
    std::fs::create_dir_all(&gen2).unwrap();
    let fifth = live.ca.issue_server(&["localhost"]).unwrap();
    write(&gen2.join("server.pem"), &fifth.cert_pem);
    write(&gen2.join("server.key"), &fifth.key_pem);
    std::os::unix::fs::symlink("..2026_11_23_02", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(&gen1).unwrap();
    live.wait_for(&fifth).await;
    expect_event(&mut stream, &live.stream_tx).await;

    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert!(
        live.running
            .reloader
            .stats
            .tls_applied
            .load(Ordering::Relaxed)
            >= 2
    );

    // Quiet files mean no reloads: the proxy's own reads of them must not trigger any.
    let stats = &live.running.reloader.stats;
    let attempts =
        || stats.tls_applied.load(Ordering::Relaxed) + stats.tls_failed.load(Ordering::Relaxed);
    let before = attempts();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attempts(), before, "reloads without any change");

    // A bad file on disk is refused once, not again and again.
    let gen3 = mount.join("..2026_11_23_03");
    std::fs::create_dir_all(&gen3).unwrap();
    write(&gen3.join("server.pem"), "garbage\n");
    write(&gen3.join("server.key"), &fifth.key_pem);
    std::os::unix::fs::symlink("..2026_11_23_03", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    for _ in 0..50 {
        if stats.tls_failed.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = stats.tls_failed.load(Ordering::Relaxed);
    assert!(failed > 0, "the bad file was noticed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stats.tls_failed.load(Ordering::Relaxed),
        failed,
        "refused once"
    );
}

#[tokio::test]
async fn broken_replacements_are_refused_and_the_old_certificate_stays() {
    let live = start("tls").await;
    let tls = live.dir.path().join("tls");
    let original = der(&std::fs::read_to_string(tls.join("server.pem")).unwrap());
    let good = live.ca.issue_server(&["localhost"]).unwrap();
    let other = live.ca.issue_server(&["localhost"]).unwrap();
    let expired = live
        .ca
        .issue_server_until(&["localhost"], (2001, 1, 1))
        .unwrap();
    let wrong_name = live.ca.issue_server(&["elsewhere.example"]).unwrap();
    let truncated_key = &good.key_pem[..good.key_pem.len() / 2];
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("truncated key", &good.cert_pem, truncated_key, "server.key"),
        (
            "key of another certificate",
            &good.cert_pem,
            &other.key_pem,
            "server.key",
        ),
        (
            "expired certificate",
            &expired.cert_pem,
            &expired.key_pem,
            "expired",
        ),
        (
            "garbage certificate",
            "not a certificate at all\n",
            &good.key_pem,
            "server.pem",
        ),
        (
            "wrong host name",
            &wrong_name.cert_pem,
            &wrong_name.key_pem,
            "does not cover",
        ),
    ];
    for (name, cert, key, error_has) in cases {
        let failed_before = live
            .running
            .reloader
            .stats
            .tls_failed
            .load(Ordering::Relaxed);
        write(&tls.join("server.pem"), cert);
        write(&tls.join("server.key"), key);
        let err = live
            .running
            .reloader
            .reload_tls()
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains(error_has), "{name}: {err}");
        assert_eq!(
            live.presented().await,
            original,
            "{name}: old certificate still served"
        );
        assert!(
            live.running
                .reloader
                .stats
                .tls_failed
                .load(Ordering::Relaxed)
                > failed_before,
            "{name}: counted"
        );
        let last = live
            .running
            .reloader
            .stats
            .last_error
            .lock()
            .unwrap()
            .clone();
        assert!(last.is_some_and(|l| l.contains(error_has)), "{name}");
    }
    // A good pair after all that is taken.
    write(&tls.join("server.pem"), &good.cert_pem);
    write(&tls.join("server.key"), &good.key_pem);
    let outcome = live.running.reloader.reload_tls().await.unwrap();
    assert!(outcome.tls_changed);
    assert_eq!(live.presented().await, der(&good.cert_pem));
}

#[tokio::test]
async fn config_reload_changes_routing_or_nothing() {
    let live = start("tls").await;
    let c = live.client();
    assert_eq!(
        c.post(live.url("/v2"))
            .body(support::PING)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let good = std::fs::read_to_string(&live.config).unwrap()
        + &format!(
            "[[routes]]\npath = \"/v2\"\nupstream = \"http://{}/v2\"\n",
            live._backend.addr
        );
    write(&live.config, &good);
    let outcome = live.running.reloader.reload_config().await.unwrap();
    assert!(outcome.config_changed, "{outcome}");
    let r = c
        .post(live.url("/v2"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/v2"));

    // Broken: unknown key. Nothing changes; the error names the key.
    write(&live.config, &format!("{good}\nbogus_key = 1\n"));
    let err = live
        .running
        .reloader
        .reload_config()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus_key"), "{err}");
    assert_eq!(
        c.post(live.url("/v2"))
            .body(support::PING)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the previous config is still in force"
    );

    // A bind change is reported as needing a restart, the rest applies.
    write(
        &live.config,
        &good.replacen("bind = \"127.0.0.1:0\"", "bind = \"127.0.0.1:1\"", 1),
    );
    let outcome = live.running.reloader.reload_config().await.unwrap();
    assert_eq!(outcome.needs_restart, ["listener.bind"]);
    assert!(
        outcome
            .to_string()
            .contains("restart needed for listener.bind")
    );
}

#[tokio::test]
async fn crl_update_revokes_a_client_for_new_connections() {
    let live = start("tls").await;
    let client_cert = live.ca.issue_client("partner-a", None).unwrap();
    let dir = live.dir.path();
    write(&dir.join("clients-ca.pem"), live.ca_pem());
    write(&dir.join("clients.crl"), &live.ca.crl(&[], 2099).unwrap());
    let text = std::fs::read_to_string(&live.config).unwrap().replace(
        "[admin]",
        &format!(
            "client_auth = \"required\"\nclient_ca = \"{}\"\nclient_crls = [\"{}\"]\n[admin]",
            dir.join("clients-ca.pem").display(),
            dir.join("clients.crl").display()
        ),
    );
    write(&live.config, &text);
    live.running.reloader.reload_config().await.unwrap();
    assert_eq!(
        request_with_cert(&live, &client_cert).await.as_deref(),
        Ok("200")
    );

    write(
        &dir.join("clients.crl"),
        &live.ca.crl(&[client_cert.serial], 2099).unwrap(),
    );
    let outcome = live.running.reloader.reload_tls().await.unwrap();
    assert!(outcome.tls_changed);
    let refused = request_with_cert(&live, &client_cert).await;
    assert!(refused.is_err(), "revoked on new connections: {refused:?}");
}

/// Status code of one request over a fresh TLS connection presenting `cert`.
async fn request_with_cert(live: &Live, cert: &IssuedCert) -> Result<String, String> {
    let text = tls::post_ping(live.running.addr, live.ca_pem(), Some(cert), "/mcp", "").await?;
    text.get(9..12)
        .map(str::to_owned)
        .ok_or_else(|| format!("no status: {text}"))
}

#[tokio::test]
async fn admin_reload_metrics_certs_and_readiness() {
    let live = start("tls").await;
    let admin = format!("http://{}", live.running.admin_addr.unwrap());
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        let c = c.clone();
        let url = format!("{admin}{path}");
        async move { c.get(url).send().await.unwrap() }
    };

    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("mcp_edge_cert_expiry_seconds{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("source=\"listener.tls.cert\""),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_edge_reloads_total{"), "{metrics}");
    let certs: serde_json::Value = get("/certs").await.json().await.unwrap();
    assert_eq!(certs["worst"], "ok", "{certs}");
    assert_eq!(certs["certificates"][0]["source"], "listener.tls.cert");
    assert_eq!(get("/readyz").await.status(), 200);

    // POST /reload: the SIGHUP path. A broken file is refused with the reason.
    let ok = c.post(format!("{admin}/reload")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let good = std::fs::read_to_string(&live.config).unwrap();
    write(
        &live.config,
        &format!("{good}\n[[routes]]\npath = \"nope\"\nupstream = \"x\"\n"),
    );
    let refused = c.post(format!("{admin}/reload")).send().await.unwrap();
    assert_eq!(refused.status(), 500);
    assert!(refused.text().await.unwrap().contains("routes[1].path"));
    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("mcp_edge_reloads_total{what=\"config\",result=\"refused\"} 1"),
        "{metrics}"
    );

    // A refused expired replacement on disk does not make the proxy unready: it still
    // serves the valid certificate.
    write(&live.config, &good);
    let expired = live
        .ca
        .issue_server_until(&["localhost"], (2001, 1, 1))
        .unwrap();
    let tls = live.dir.path().join("tls");
    write(&tls.join("server.pem"), &expired.cert_pem);
    write(&tls.join("server.key"), &expired.key_pem);
    assert!(live.running.reloader.reload_tls().await.is_err());
    assert_eq!(get("/readyz").await.status(), 200);
    let certs: serde_json::Value = get("/certs").await.json().await.unwrap();
    live.running.monitor.refresh();
    let _ = certs;

    // A proxy that starts with an expired certificate (start-up serves it, so other SNI
    // names stay up) is not ready.
    let cfg = mcp_edge::config::load(&live.config).unwrap();
    let second = app::start(cfg).await.unwrap();
    let admin2 = format!("http://{}", second.admin_addr.unwrap());
    let r = c.get(format!("{admin2}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("expired"));
    second.shutdown.force();
}

/// `mcp-edge check` on `config`: exit status and stderr.
fn run_check(config: &Path) -> (Option<i32>, String) {
    let r = support::cli::run([
        OsStr::new("check"),
        OsStr::new("--config"),
        config.as_os_str(),
    ]);
    (r.status, r.stderr)
}

#[tokio::test]
async fn start_reload_and_check_agree_on_an_ip_public_url() {
    // Serving a `localhost`-only certificate; public_url moves to an IP address it lacks.
    let live = start("tls").await;
    let tls = live.dir.path().join("tls");
    let original = der(&std::fs::read_to_string(tls.join("server.pem")).unwrap());
    let good = std::fs::read_to_string(&live.config).unwrap();
    let by_ip = good.replace(
        "public_url = \"https://localhost:8443\"",
        "public_url = \"https://127.0.0.1:8443\"",
    );
    assert_ne!(by_ip, good);
    write(&live.config, &by_ip);

    // The same refusal, word for word, from all three paths.
    let reload = live
        .running
        .reloader
        .reload_config()
        .await
        .expect_err("reload refuses")
        .to_string();
    let start = match app::start(mcp_edge::config::load(&live.config).unwrap()).await {
        Ok(r) => {
            r.shutdown.force();
            panic!("start accepted a certificate that lacks public_url's IP host");
        }
        Err(e) => e.to_string(),
    };
    let (status, stderr) = run_check(&live.config);
    assert_eq!(status, Some(64), "{stderr}");
    let check = stderr
        .trim_end()
        .strip_prefix("mcp-edge check: ")
        .unwrap_or_else(|| panic!("not a check error: {stderr}"));
    assert!(
        start.contains(&format!(
            "listener.public_url: certificate {} does not cover `127.0.0.1`",
            tls.join("server.pem").display()
        )),
        "{start}"
    );
    assert_eq!(reload, start);
    assert_eq!(check, start);
    assert_eq!(live.presented().await, original, "still serving");

    // A certificate carrying the address as an IP SAN: all three accept it.
    let with_ip = live.ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    write(&tls.join("server.key"), &with_ip.key_pem);
    write(&tls.join("server.pem"), &with_ip.cert_pem);
    let (status, stderr) = run_check(&live.config);
    assert_eq!(status, Some(0), "{stderr}");
    let second = app::start(mcp_edge::config::load(&live.config).unwrap())
        .await
        .expect("start accepts it");
    second.shutdown.force();
    let outcome = live.running.reloader.reload_config().await.unwrap();
    assert!(outcome.config_changed, "{outcome}");
    live.wait_for(&with_ip).await;
}

#[tokio::test]
async fn a_replacement_not_valid_yet_is_refused_like_an_expired_one() {
    let live = start("tls").await;
    let tls = live.dir.path().join("tls");
    let original = der(&std::fs::read_to_string(tls.join("server.pem")).unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(4000, 1, 1);
    params.not_after = rcgen::date_time_ymd(4001, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    write(&tls.join("server.pem"), &cert.pem());
    write(&tls.join("server.key"), &key.serialize_pem());
    let err = live
        .running
        .reloader
        .reload_tls()
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("is not valid before 4000-01-01"), "{err}");
    assert_eq!(live.presented().await, original);
}
