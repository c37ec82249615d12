//! `mcp-edge certs status --config FILE [--json]` run as a real process against certificates
//! generated here with chosen validity periods: exit status 0 (ok), 1 (warning), 2 (critical,
//! expired or unreadable), 64 (bad config); the table; the JSON document. Default thresholds:
//! warning at 30 days, critical at 7.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use support::cli::{EXIT_CONFIG, Run};
const DAY: Duration = Duration::from_secs(86_400);
/// Added to every "N days left" so the whole-day figure is still N when the binary runs.
const MARGIN: Duration = Duration::from_secs(3_600);

fn in_days(days: u64) -> SystemTime {
    SystemTime::now() + DAY * days as u32 + MARGIN
}

/// A CA built with rcgen; `DevCa` has no way to choose validity dates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca_params(cn: &str, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (SystemTime::now() - DAY).into();
    params.not_after = not_after.into();
    params
}

impl TestCa {
    fn root(cn: &str) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(cn, in_days(3650));
        let pem = params.self_signed(&key).expect("self-signed").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn intermediate(&self, cn: &str, not_after: SystemTime) -> TestCa {
        let key = KeyPair::generate().expect("key");
        let params = ca_params(cn, not_after);
        let pem = params.signed_by(&key, &self.issuer).expect("sign").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `sans` (DNS names or IPs; `spiffe://` names become URI SANs); (cert, key).
    fn leaf(&self, cn: &str, sans: &[&str], not_after: SystemTime) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let (uris, names): (Vec<&str>, Vec<&str>) =
            sans.iter().partition(|s| s.starts_with("spiffe://"));
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(uri).expect("uri"),
            ));
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (SystemTime::now() - DAY).into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn crl(&self, next_update: SystemTime) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: (SystemTime::now() - DAY).into(),
            next_update: next_update.into(),
            crl_number: rcgen::SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("crl")
            .pem()
            .expect("pem")
    }
}

/// A temporary directory for certificates and `edge.toml`, with the root CA.
type Fixture = support::cli::Fixture<TestCa>;

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_ca(TestCa::root("Certs Test Root"))
    }

    /// Writes `{stem}.pem` (leaf, then `chain` PEMs) and `{stem}.key`.
    fn leaf(&self, stem: &str, cn: &str, sans: &[&str], not_after: SystemTime, chain: &[&str]) {
        let issuer = &self.ca;
        let (cert, key) = issuer.leaf(cn, sans, not_after);
        self.write(&format!("{stem}.pem"), cert + &chain.concat());
        self.write(&format!("{stem}.key"), key);
    }

    /// `edge.toml` with `server.pem`/`server.key`, `tls_extra` inside `[listener.tls]`, and
    /// `rest` after one plain-HTTP route.
    fn config(&self, tls_extra: &str, rest: &str) -> PathBuf {
        self.write(
            "edge.toml",
            format!(
                r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://edge.example:8443"

[listener.tls]
cert = "server.pem"
key = "server.key"
{tls_extra}

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"

{rest}
"#
            ),
        )
    }

    /// A config whose only certificate is a `server.pem` with `days` left.
    fn single(days_left: Option<u64>) -> (Fixture, PathBuf) {
        let fx = Fixture::new();
        let not_after = match days_left {
            Some(d) => in_days(d),
            None => SystemTime::now() - DAY + MARGIN,
        };
        fx.leaf("server", "edge.example", &["edge.example"], not_after, &[]);
        let cfg = fx.config("", "");
        (fx, cfg)
    }
}

fn certs_status(config: &Path, json: bool) -> Run {
    let mut cmd = support::cli::command();
    cmd.args(["certs", "status", "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run mcp-edge certs status").into()
}

#[track_caller]
fn expect_status(r: &Run, code: i32) {
    assert_eq!(
        r.status,
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// The table row whose SOURCE and KIND columns match.
#[track_caller]
fn row<'a>(table: &'a str, kind: &str, source: &str) -> &'a str {
    table
        .lines()
        .find(|l| {
            let mut cols = l.split_whitespace();
            cols.next() == Some(kind) && cols.next() == Some(source)
        })
        .unwrap_or_else(|| panic!("no {kind} row for {source} in:\n{table}"))
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.stdout))
}

#[test]
fn all_ok_exits_0_and_lists_leaf_and_chain() {
    let fx = Fixture::new();
    let inter = fx.ca.intermediate("Certs Test Intermediate", in_days(1000));
    let (leaf, key) = inter.leaf(
        "edge.example",
        &["edge.example", "mcp.edge.example", "127.0.0.1"],
        in_days(100),
    );
    fx.write("server.pem", leaf + &inter.pem);
    fx.write("server.key", key);
    let cfg = fx.config("", "");

    let r = certs_status(&cfg, false);
    expect_status(&r, 0);
    let header = r.stdout.lines().next().unwrap_or_default();
    for col in [
        "KIND",
        "SOURCE",
        "SUBJECT",
        "SANS",
        "ISSUER",
        "NOT AFTER",
        "DAYS LEFT",
        "LEVEL",
    ] {
        assert!(header.contains(col), "header lacks {col}: {header}");
    }
    let leaf = row(&r.stdout, "server_leaf", "listener.tls.cert");
    assert!(leaf.contains("CN=edge.example"), "{leaf}");
    assert!(
        leaf.contains("edge.example,mcp.edge.example,127.0.0.1"),
        "{leaf}"
    );
    assert!(leaf.contains("CN=Certs Test Intermediate"), "{leaf}");
    assert!(leaf.contains(" 100 "), "100 days left: {leaf}");
    assert!(leaf.ends_with("OK"), "{leaf}");
    let chain = row(&r.stdout, "server_chain", "listener.tls.cert");
    assert!(chain.contains("CN=Certs Test Root"), "{chain}");
    assert!(chain.contains(" 1000 "), "{chain}");
    assert!(chain.ends_with("OK"), "{chain}");
    assert!(!r.stdout.contains("error:"), "{}", r.stdout);
}

#[test]
fn warning_exits_1() {
    let (_fx, cfg) = Fixture::single(Some(20));
    let r = certs_status(&cfg, false);
    expect_status(&r, 1);
    let leaf = row(&r.stdout, "server_leaf", "listener.tls.cert");
    assert!(leaf.contains(" 20 "), "{leaf}");
    assert!(leaf.ends_with("WARNING"), "{leaf}");
}

#[test]
fn critical_exits_2() {
    let (_fx, cfg) = Fixture::single(Some(2));
    let r = certs_status(&cfg, false);
    expect_status(&r, 2);
    let leaf = row(&r.stdout, "server_leaf", "listener.tls.cert");
    assert!(leaf.contains(" 2 "), "{leaf}");
    assert!(leaf.ends_with("CRITICAL"), "{leaf}");
}

#[test]
fn expired_exits_2() {
    let (_fx, cfg) = Fixture::single(None);
    let r = certs_status(&cfg, false);
    expect_status(&r, 2);
    let leaf = row(&r.stdout, "server_leaf", "listener.tls.cert");
    assert!(leaf.ends_with("EXPIRED"), "{leaf}");
    assert!(leaf.contains(" -1 "), "less than a day past: {leaf}");

    let doc = json(&certs_status(&cfg, true));
    assert_eq!(doc["worst"], "expired");
    let secs = doc["certificates"][0]["seconds_left"].as_i64().unwrap();
    assert!((-83_000..=-82_700).contains(&secs), "{secs}");
}

#[test]
fn thresholds_come_from_the_config() {
    let (fx, _) = Fixture::single(Some(20));
    // 20 days left is only "ok" when warnings start at 10 days.
    let cfg = fx.config(
        "",
        "[certs]\nwarn_before = \"10d\"\ncritical_before = \"3d\"\n",
    );
    expect_status(&certs_status(&cfg, false), 0);
    let cfg = fx.config(
        "",
        "[certs]\nwarn_before = \"60d\"\ncritical_before = \"21d\"\n",
    );
    expect_status(&certs_status(&cfg, false), 2);
}

#[test]
fn json_lists_every_certificate_in_config_order() {
    let fx = Fixture::new();
    fx.leaf(
        "server",
        "edge.example",
        &["edge.example"],
        in_days(100),
        &[],
    );
    fx.leaf("sni", "api.example", &["api.example"], in_days(20), &[]);
    fx.write("client-ca.pem", &fx.ca.pem);
    fx.write("client.crl", fx.ca.crl(in_days(3)));
    let upstream_ca = TestCa::root("Upstream Root");
    fx.write("upstream-ca.pem", &upstream_ca.pem);
    fx.leaf(
        "upstream-client",
        "edge-client",
        &["spiffe://example.org/edge"],
        in_days(60),
        &[],
    );
    fx.write("webhook-ca.pem", &fx.ca.pem);
    let cfg = fx.config(
        r#"client_auth = "optional"
client_ca = "client-ca.pem"
client_crls = ["client.crl"]

[[listener.tls.sni]]
names = ["api.example"]
cert = "sni.pem"
key = "sni.key"
"#,
        r#"
[[routes]]
path = "/secure"
upstream = "https://backend.internal:9443/mcp"

[routes.upstream_tls]
ca = "upstream-ca.pem"
client_cert = "upstream-client.pem"
client_key = "upstream-client.key"

[certs.webhook]
url = "https://alerts.example/hook"
ca = "webhook-ca.pem"
"#,
    );

    let r = certs_status(&cfg, true);
    expect_status(&r, 2);
    let doc = json(&r);
    assert_eq!(doc["worst"], "critical", "{doc:#}");
    let certs = doc["certificates"].as_array().expect("array");
    let summary: Vec<(&str, &str, &str)> = certs
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap(),
                c["source"].as_str().unwrap(),
                c["level"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("server_leaf", "listener.tls.cert", "ok"),
            ("server_leaf", "listener.tls.sni[0].cert", "warning"),
            ("client_ca", "listener.tls.client_ca", "ok"),
            ("crl", "listener.tls.client_crls[0]", "critical"),
            ("upstream_ca", "routes[1].upstream_tls.ca", "ok"),
            (
                "upstream_client",
                "routes[1].upstream_tls.client_cert",
                "ok"
            ),
            ("webhook_ca", "certs.webhook.ca", "ok"),
        ],
        "{doc:#}"
    );
    let leaf = &certs[0];
    assert_eq!(leaf["subject"], "CN=edge.example");
    assert_eq!(leaf["issuer"], "CN=Certs Test Root");
    assert_eq!(leaf["sans"], serde_json::json!(["edge.example"]));
    assert_eq!(
        leaf["path"],
        fx.dir.path().join("server.pem").display().to_string()
    );
    assert_eq!(leaf["error"], Value::Null);
    let not_after = leaf["not_after"].as_str().unwrap();
    let parsed = humantime::parse_rfc3339(not_after).expect("RFC 3339 not_after");
    let left = parsed.duration_since(SystemTime::now()).unwrap();
    assert!(left > DAY * 100 && left < DAY * 101, "{not_after}");
    assert!(humantime::parse_rfc3339(leaf["not_before"].as_str().unwrap()).is_ok());
    let secs = leaf["seconds_left"].as_i64().unwrap();
    assert!((100 * 86_400..101 * 86_400).contains(&secs), "{secs}");
    let crl = &certs[3];
    assert_eq!(crl["subject"], "CN=Certs Test Root");
    assert!(humantime::parse_rfc3339(crl["not_after"].as_str().unwrap()).is_ok());
    assert_eq!(
        certs[5]["sans"],
        serde_json::json!(["spiffe://example.org/edge"])
    );

    // The table carries the same entries.
    let r = certs_status(&cfg, false);
    expect_status(&r, 2);
    assert!(
        row(&r.stdout, "crl", "listener.tls.client_crls[0]").ends_with("CRITICAL"),
        "{}",
        r.stdout
    );
    assert!(
        row(
            &r.stdout,
            "upstream_client",
            "routes[1].upstream_tls.client_cert"
        )
        .contains("spiffe://example.org/edge"),
        "{}",
        r.stdout
    );
}

#[test]
fn unreadable_files_exit_2_with_the_error() {
    let fx = Fixture::new();
    fx.leaf(
        "server",
        "edge.example",
        &["edge.example"],
        in_days(100),
        &[],
    );
    fx.write("garbage.pem", "this is not a certificate\n");
    fx.write("garbage.key", "nor a key\n");
    let cfg = fx.config(
        r#"
[[listener.tls.sni]]
names = ["api.example"]
cert = "missing.pem"
key = "missing.key"

[[listener.tls.sni]]
names = ["other.example"]
cert = "garbage.pem"
key = "garbage.key"
"#,
        "",
    );

    let r = certs_status(&cfg, false);
    expect_status(&r, 2);
    let missing = row(&r.stdout, "server_leaf", "listener.tls.sni[0].cert");
    assert!(missing.ends_with("CRITICAL"), "{missing}");
    assert!(
        r.stdout
            .contains("error: listener.tls.sni[0].cert: cannot read")
            && r.stdout.contains("missing.pem"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("error: listener.tls.sni[1].cert:")
            && r.stdout.contains("no usable PEM certificate"),
        "{}",
        r.stdout
    );
    assert!(
        row(&r.stdout, "server_leaf", "listener.tls.cert").ends_with("OK"),
        "the readable certificate is still listed: {}",
        r.stdout
    );

    let doc = json(&certs_status(&cfg, true));
    assert_eq!(doc["worst"], "critical");
    let broken = &doc["certificates"][1];
    assert_eq!(broken["level"], "critical");
    assert_eq!(broken["not_after"], Value::Null);
    assert!(
        broken["error"].as_str().unwrap().contains("cannot read"),
        "{broken}"
    );
}

#[test]
fn config_errors_exit_64() {
    let fx = Fixture::new();
    let cfg = fx.write("edge.toml", "[listener]\nbind = \"nope\"\n");
    let r = certs_status(&cfg, false);
    expect_status(&r, EXIT_CONFIG);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.starts_with("mcp-edge certs status: ") && r.stderr.contains("edge.toml"),
        "{}",
        r.stderr
    );
    let r = certs_status(&fx.dir.path().join("absent.toml"), true);
    expect_status(&r, EXIT_CONFIG);
}

#[test]
fn help_documents_exit_codes() {
    let out = support::cli::command()
        .args(["certs", "status", "--help"])
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["Exit status", "--json", "0 ", "1 ", "2 ", "64"] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}
