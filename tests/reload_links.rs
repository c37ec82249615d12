//! Certificates reached through symlink chains are reloaded by the watcher, not by the rescan:
//! certbot's `live/` links into `archive/`, a re-pointed link, a link to a link, Kubernetes'
//! `..data` directory link, and a broken file behind a link (refused, old one kept). The
//! rescan interval is an hour, so only a file-change event can explain a pick-up.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mcp_edge::app::{self, Running};
use mcp_edge::demo::pki::{DevCa, IssuedCert};
use support::tls::{self, der};

/// How long a change may take to be served: the 500 ms debounce plus a reload, with room for
/// a slow machine. The rescan (1 h) cannot fire within it.
const PICK_UP: Duration = Duration::from_secs(3);

/// A proxy whose `listener.tls` `cert`/`key` are the given paths, with a 1 h rescan.
struct Proxy {
    running: Running,
    dir: tempfile::TempDir,
    ca: DevCa,
    first: IssuedCert,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.running.shutdown.force();
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn link(target: &str, at: &Path) {
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// Re-points the link `at` atomically, as certbot and Kubernetes do: a new link renamed over.
fn relink(target: &str, at: &Path) {
    let tmp = at.with_extension("relink-tmp");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, at).unwrap();
}

impl Proxy {
    /// `layout` lays out files under the temporary directory (the first certificate and key
    /// are passed in) and returns the cert and key paths to configure.
    async fn start(layout: impl FnOnce(&Path, &IssuedCert) -> (PathBuf, PathBuf)) -> Proxy {
        support::init();
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("link reload test CA").unwrap();
        let first = ca.issue_server(&["localhost"]).unwrap();
        let (cert, key) = layout(dir.path(), &first);
        let text = format!(
            r#"[listener]
bind = "127.0.0.1:0"
public_url = "https://localhost:8443"
[listener.tls]
cert = "{}"
key = "{}"
[certs]
rescan_interval = "1h"
[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
"#,
            cert.display(),
            key.display()
        );
        let config = dir.path().join("mcp-edge.toml");
        write(&config, &text);
        let cfg = mcp_edge::config::load(&config).unwrap();
        let running = app::start(cfg).await.unwrap();
        let proxy = Proxy {
            running,
            dir,
            ca,
            first,
        };
        assert_eq!(proxy.presented().await, der(&proxy.first.cert_pem));
        proxy
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn issue(&self) -> IssuedCert {
        self.ca.issue_server(&["localhost"]).unwrap()
    }

    /// The leaf certificate a new handshake is given.
    async fn presented(&self) -> Vec<u8> {
        tls::presented(self.running.addr, &self.ca.cert_pem).await
    }

    /// Waits up to [`PICK_UP`] for new handshakes to present `cert`; returns how long it took.
    async fn served_within(&self, cert: &IssuedCert, what: &str) -> Duration {
        let want = der(&cert.cert_pem);
        let since = Instant::now();
        while since.elapsed() < PICK_UP {
            if self.presented().await == want {
                let took = since.elapsed();
                eprintln!("{what}: served after {took:?}");
                return took;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: the new certificate was not served within {PICK_UP:?}");
    }

    fn attempts(&self) -> u64 {
        let s = &self.running.reloader.stats;
        s.tls_applied.load(Ordering::Relaxed) + s.tls_failed.load(Ordering::Relaxed)
    }
}

/// certbot: `live/x/{cert,privkey}.pem` → `../../archive/x/{cert,privkey}1.pem`.
fn certbot(base: &Path, first: &IssuedCert) -> (PathBuf, PathBuf) {
    write(&base.join("archive/x/cert1.pem"), &first.cert_pem);
    write(&base.join("archive/x/privkey1.pem"), &first.key_pem);
    link("../../archive/x/cert1.pem", &base.join("live/x/cert.pem"));
    link(
        "../../archive/x/privkey1.pem",
        &base.join("live/x/privkey.pem"),
    );
    (
        base.join("live/x/cert.pem"),
        base.join("live/x/privkey.pem"),
    )
}

#[tokio::test]
async fn certbot_archive_file_rewritten_in_place_is_served() {
    let p = Proxy::start(certbot).await;
    let next = p.issue();
    write(&p.path("archive/x/privkey1.pem"), &next.key_pem);
    write(&p.path("archive/x/cert1.pem"), &next.cert_pem);
    p.served_within(&next, "in-place write behind certbot link")
        .await;

    // The proxy's own reads through the links do not make it reload again and again.
    let before = p.attempts();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(p.attempts(), before, "reloads without any change");
}

#[tokio::test]
async fn certbot_archive_file_renamed_over_is_served() {
    let p = Proxy::start(certbot).await;
    let next = p.issue();
    write(&p.path("archive/x/privkey1.pem.tmp"), &next.key_pem);
    write(&p.path("archive/x/cert1.pem.tmp"), &next.cert_pem);
    std::fs::rename(
        p.path("archive/x/privkey1.pem.tmp"),
        p.path("archive/x/privkey1.pem"),
    )
    .unwrap();
    std::fs::rename(
        p.path("archive/x/cert1.pem.tmp"),
        p.path("archive/x/cert1.pem"),
    )
    .unwrap();
    p.served_within(&next, "rename over the file behind certbot link")
        .await;
}

#[tokio::test]
async fn a_re_pointed_link_is_followed_to_its_new_directory() {
    let p = Proxy::start(certbot).await;
    // Re-point both links into a directory that was on no chain before.
    let second = p.issue();
    write(&p.path("archive/x-2/cert2.pem"), &second.cert_pem);
    write(&p.path("archive/x-2/privkey2.pem"), &second.key_pem);
    relink(
        "../../archive/x-2/privkey2.pem",
        &p.path("live/x/privkey.pem"),
    );
    relink("../../archive/x-2/cert2.pem", &p.path("live/x/cert.pem"));
    p.served_within(&second, "re-pointed link").await;

    // Only a watch re-resolved onto `archive/x-2` sees this.
    let third = p.issue();
    write(&p.path("archive/x-2/privkey2.pem"), &third.key_pem);
    write(&p.path("archive/x-2/cert2.pem"), &third.cert_pem);
    p.served_within(&third, "write in the link's new directory")
        .await;

    // And the directory left behind no longer matters: changing it changes nothing.
    let before = p.attempts();
    let stale = p.issue();
    write(&p.path("archive/x/cert1.pem"), &stale.cert_pem);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(p.attempts(), before, "no reload for the old directory");
    assert_eq!(p.presented().await, der(&third.cert_pem));
}

#[tokio::test]
async fn a_link_to_a_link_is_watched_at_every_hop() {
    // live/x/cert.pem → ../../stage/x/cert.pem → ../../archive/x/cert1.pem (and the key).
    let p = Proxy::start(|base, first| {
        write(&base.join("archive/x/cert1.pem"), &first.cert_pem);
        write(&base.join("archive/x/privkey1.pem"), &first.key_pem);
        link("../../archive/x/cert1.pem", &base.join("stage/x/cert.pem"));
        link(
            "../../archive/x/privkey1.pem",
            &base.join("stage/x/key.pem"),
        );
        link("../../stage/x/cert.pem", &base.join("live/x/cert.pem"));
        link("../../stage/x/key.pem", &base.join("live/x/privkey.pem"));
        (
            base.join("live/x/cert.pem"),
            base.join("live/x/privkey.pem"),
        )
    })
    .await;
    // The last hop's file, rewritten.
    let second = p.issue();
    write(&p.path("archive/x/privkey1.pem"), &second.key_pem);
    write(&p.path("archive/x/cert1.pem"), &second.cert_pem);
    p.served_within(&second, "write at the end of a two-link chain")
        .await;
    // The middle link, re-pointed.
    let third = p.issue();
    write(&p.path("archive/x/cert3.pem"), &third.cert_pem);
    write(&p.path("archive/x/privkey3.pem"), &third.key_pem);
    relink("../../archive/x/privkey3.pem", &p.path("stage/x/key.pem"));
    relink("../../archive/x/cert3.pem", &p.path("stage/x/cert.pem"));
    p.served_within(&third, "middle link re-pointed").await;
}

#[tokio::test]
async fn a_file_behind_a_directory_link_is_watched() {
    // Kubernetes: tls.crt → ..data/tls.crt, ..data → ..2026_12_01_01. Rewriting inside the
    // timestamped directory (a secrets agent, not the kubelet) changes no link.
    let p = Proxy::start(|base, first| {
        let m = base.join("mount");
        write(&m.join("..2026_12_01_01/tls.crt"), &first.cert_pem);
        write(&m.join("..2026_12_01_01/tls.key"), &first.key_pem);
        link("..2026_12_01_01", &m.join("..data"));
        link("..data/tls.crt", &m.join("tls.crt"));
        link("..data/tls.key", &m.join("tls.key"));
        (m.join("tls.crt"), m.join("tls.key"))
    })
    .await;
    let next = p.issue();
    write(&p.path("mount/..2026_12_01_01/tls.key"), &next.key_pem);
    write(&p.path("mount/..2026_12_01_01/tls.crt"), &next.cert_pem);
    p.served_within(&next, "write behind a directory link")
        .await;
}

#[tokio::test]
async fn a_bad_file_behind_a_link_keeps_the_old_certificate() {
    let p = Proxy::start(certbot).await;
    let stats = &p.running.reloader.stats;
    write(&p.path("archive/x/cert1.pem"), "not a certificate\n");
    let since = Instant::now();
    while stats.tls_failed.load(Ordering::Relaxed) == 0 {
        assert!(
            since.elapsed() < PICK_UP,
            "the bad file behind the link was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.presented().await, der(&p.first.cert_pem), "old one kept");
    let last = stats.last_error.lock().unwrap().clone().unwrap_or_default();
    assert!(
        last.contains("cert1.pem") || last.contains("cert.pem"),
        "{last}"
    );

    // Refused once, not on every read of it.
    let failed = stats.tls_failed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        stats.tls_failed.load(Ordering::Relaxed),
        failed,
        "refused once"
    );

    // A good file afterwards is taken.
    let next = p.issue();
    write(&p.path("archive/x/privkey1.pem"), &next.key_pem);
    write(&p.path("archive/x/cert1.pem"), &next.cert_pem);
    p.served_within(&next, "good file after a bad one").await;
}
