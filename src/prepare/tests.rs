//! `prepare` driven alone: the validity rule per purpose, the `public_url` host rule (IP
//! hosts included), and which purposes contact issuer key sources.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::demo::pki::DevCa;

/// A directory with a CA; certificates are issued into it by name.
struct Files {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Files {
    fn new() -> Files {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Files {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: DevCa::new("prepare test CA").expect("CA"),
        }
    }

    /// Writes `{stem}.pem` / `{stem}.key` for `names`.
    fn issue(&self, stem: &str, names: &[&str]) {
        self.write_pair(stem, &self.ca.issue_server(names).expect("issue"));
    }

    /// Like [`issue`](Self::issue), expired since 2001.
    fn issue_expired(&self, stem: &str, names: &[&str]) {
        let c = self
            .ca
            .issue_server_until(names, (2001, 1, 1))
            .expect("issue");
        self.write_pair(stem, &c);
    }

    fn write_pair(&self, stem: &str, c: &crate::demo::pki::IssuedCert) {
        let dir = self.dir.path();
        std::fs::write(dir.join(format!("{stem}.pem")), &c.cert_pem).expect("write cert");
        std::fs::write(dir.join(format!("{stem}.key")), &c.key_pem).expect("write key");
    }

    /// A config serving `{cert}.pem` for `public_url`, followed by `extra` listener.tls keys
    /// and `tables`.
    fn config(&self, public_url: &str, cert: &str, extra: &str, tables: &str) -> Config {
        let text = format!(
            "[listener]\nbind = \"127.0.0.1:0\"\npublic_url = \"{public_url}\"\n\
             [listener.tls]\ncert = \"{cert}.pem\"\nkey = \"{cert}.key\"\n{extra}\n{tables}\n\
             [[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n"
        );
        crate::config::parse(&text, Path::new("test.toml"), self.dir.path())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"))
    }
}

const PURPOSES: [Purpose<'static>; 3] = [
    Purpose::Start,
    Purpose::Reload { serving: &[] },
    Purpose::Check,
];

#[test]
fn an_ip_host_needs_an_ip_san_in_the_default_certificate_for_every_purpose() {
    let f = Files::new();
    f.issue("dns_only", &["localhost"]);
    f.issue("with_ip", &["localhost", "127.0.0.1", "::1"]);
    let now = SystemTime::now();
    for purpose in PURPOSES {
        for url in ["https://127.0.0.1:8443", "https://[::1]:8443"] {
            let err = tls(&f.config(url, "dns_only", "", ""), now, purpose)
                .err()
                .unwrap_or_else(|| panic!("{purpose:?} {url}: accepted"));
            let host = url
                .trim_start_matches("https://")
                .rsplit_once(':')
                .map(|h| h.0);
            let host = host.unwrap_or_default().trim_matches(['[', ']']);
            assert!(
                matches!(&err, TlsError::HostNotCovered { host: h, .. } if h == host),
                "{purpose:?} {url}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with("listener.public_url: certificate "),
                "{text}"
            );
            assert!(text.contains(&format!("does not cover `{host}`")), "{text}");
            assert!(text.contains("it names [localhost]"), "{text}");
            assert!(text.contains("IP SAN"), "{text}");
            assert!(
                tls(&f.config(url, "with_ip", "", ""), now, purpose).is_ok(),
                "{url}"
            );
        }
    }
}

#[test]
fn a_dns_host_is_checked_against_the_certificate_served_for_it() {
    let f = Files::new();
    f.issue("server", &["localhost"]);
    f.issue("edge", &["edge.example", "*.edge.example"]);
    let now = SystemTime::now();
    let sni = "[[listener.tls.sni]]\nnames = [\"edge.example\", \"*.edge.example\"]\n\
               cert = \"edge.pem\"\nkey = \"edge.key\"\n";
    for purpose in PURPOSES {
        // The default does not cover it and no SNI entry names it: refused.
        let err = tls(
            &f.config("https://edge.example", "server", "", ""),
            now,
            purpose,
        )
        .err()
        .expect("uncovered host refused");
        assert!(
            err.to_string().contains("does not cover `edge.example`"),
            "{err}"
        );
        // An SNI entry serves the host (exactly or by wildcard): its certificate covers it.
        for url in ["https://edge.example", "https://API.edge.example"] {
            let r = tls(&f.config(url, "server", "", sni), now, purpose);
            assert!(r.is_ok(), "{purpose:?} {url}: {:?}", r.err());
        }
        // A trailing dot is the same name.
        assert!(
            tls(
                &f.config("https://localhost.", "server", "", ""),
                now,
                purpose
            )
            .is_ok()
        );
    }
}

#[test]
fn certificates_outside_their_validity_window_follow_the_purpose() {
    let f = Files::new();
    f.issue("server", &["localhost"]);
    f.issue_expired("old", &["localhost"]);
    let now = SystemTime::now();
    let cfg = f.config("https://localhost", "old", "", "");

    // Start: served, with a warning naming the file.
    let (material, warnings) = tls(&cfg, now, Purpose::Start).expect("start serves it");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let Warning::OutsideValidity { path, expired, .. } = &warnings[0];
    assert!(*expired && path.ends_with("old.pem"), "{warnings:?}");
    assert!(
        warnings[0]
            .to_string()
            .contains("expired at 2001-01-01T00:00:00Z")
    );

    // Check and a reload that would put it in service: refused.
    for purpose in [Purpose::Check, Purpose::Reload { serving: &[] }] {
        let err = tls(&cfg, now, purpose).err().expect("refused");
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("old.pem expired at"), "{err}");
    }

    // A reload with that very certificate in service: accepted with the warning, so renewals
    // of other certificates are not blocked by it.
    let serving = material.certs;
    let (_, warnings) = tls(&cfg, now, Purpose::Reload { serving: &serving }).expect("in service");
    assert_eq!(warnings.len(), 1);

    // Not valid yet (seen from 1971): the same rule, with its own message.
    let early = SystemTime::UNIX_EPOCH + Duration::from_secs(365 * 86_400);
    let cfg = f.config("https://localhost", "server", "", "");
    let (_, warnings) = tls(&cfg, early, Purpose::Start).expect("start serves it");
    assert!(matches!(
        &warnings[..],
        [Warning::OutsideValidity { expired: false, .. }]
    ));
    for purpose in [Purpose::Check, Purpose::Reload { serving: &[] }] {
        let err = tls(&cfg, early, purpose).err().expect("refused");
        assert!(err.to_string().contains("is not valid before"), "{err}");
    }
}

#[tokio::test]
async fn prepare_builds_everything_and_check_leaves_issuer_keys_alone() {
    let f = Files::new();
    f.issue("server", &["localhost", "127.0.0.1"]);
    let issuer = "[[auth.issuers]]\nissuer = \"https://idp.example\"\nalgorithms = [\"ES256\"]\n\
                  jwks_file = \"missing-jwks.json\"\n";
    let cfg = f.config("https://127.0.0.1:8443", "server", "", issuer);

    let p = prepare(cfg.clone(), Purpose::Check)
        .await
        .expect("check prepares");
    assert_eq!(p.tls.certs.len(), 1);
    assert!(p.warnings.is_empty());
    assert!(p.audit.is_none());
    assert!(Arc::ptr_eq(&p.config, p.gateway.config()));

    // Start and reload read the issuers' key files.
    for purpose in [Purpose::Start, Purpose::Reload { serving: &[] }] {
        let err = prepare(cfg.clone(), purpose).await.err().expect("refused");
        assert!(matches!(err, PrepareError::Issuers(_)), "{err}");
        assert!(err.to_string().contains("missing-jwks.json"), "{err}");
    }
}

#[tokio::test]
async fn prepare_loads_the_audit_key_for_every_purpose() {
    let f = Files::new();
    f.issue("server", &["localhost"]);
    std::fs::write(f.dir.path().join("audit.key"), [7u8; 32]).expect("write key");
    let audit = |key: &str| format!("[audit]\nfile = \"audit.log\"\nhmac_key_file = \"{key}\"\n");
    let good = f.config("https://localhost", "server", "", &audit("audit.key"));
    let bad = f.config("https://localhost", "server", "", &audit("missing.key"));
    for purpose in PURPOSES {
        let p = prepare(good.clone(), purpose).await.expect("prepared");
        let setup = p.audit.expect("audit configured");
        assert_eq!(setup.options.hmac_key.as_deref(), Some(&[7u8; 32][..]));
        assert!(setup.file.ends_with("audit.log"));
        assert!(!setup.file.exists(), "prepare opens no audit log");
        let err = prepare(bad.clone(), purpose).await.err().expect("refused");
        assert!(
            err.to_string().starts_with("audit.hmac_key_file: "),
            "{err}"
        );
        assert!(err.to_string().contains("missing.key"), "{err}");
    }
}
