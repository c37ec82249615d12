//! `mcp-edge check --config FILE` run as a real process: exit status (0 valid, 64 for any config
//! problem), the stdout summary, and stderr messages that name the key or file at fault and why.
//! Every test has its own temporary directory and PKI, so they all run in parallel.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::cli::{EXIT_CONFIG, Run};

/// A temporary directory holding a CA, a default `localhost` server certificate
/// (`server.pem` / `server.key`) and, once written, the config file `edge.toml`.
type Fixture = support::cli::Fixture;

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_dev_ca("check test CA")
    }

    /// Writes `edge.toml` and returns its path.
    fn config(&self, text: &str) -> PathBuf {
        self.write("edge.toml", text)
    }

    /// Writes a config whose listener uses `cert`/`key` (relative to the config directory),
    /// followed by `extra` (SNI entries, more tables) and one plain-HTTP route.
    fn config_with(&self, cert: &str, key: &str, extra: &str) -> PathBuf {
        self.config(&format!(
            r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"

[listener.tls]
cert = "{cert}"
key = "{key}"

{extra}

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
"#
        ))
    }

    /// The default config: `server.pem` / `server.key` and one route.
    fn default_config(&self) -> PathBuf {
        self.config_with("server.pem", "server.key", "")
    }

    /// The default listener with a route to an https upstream carrying `upstream_tls`.
    fn https_upstream_config(&self, upstream_tls: &str) -> PathBuf {
        self.config(&format!(
            r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"

[listener.tls]
cert = "server.pem"
key = "server.key"

[[routes]]
path = "/secure"
upstream = "https://backend.internal:9443/mcp"

[routes.upstream_tls]
{upstream_tls}
"#
        ))
    }
}

fn run_check(config: &Path) -> Run {
    support::cli::run([
        OsStr::new("check"),
        OsStr::new("--config"),
        config.as_os_str(),
    ])
}

/// Runs check on `config`, expects success, returns stdout.
#[track_caller]
fn check_ok(config: &Path) -> String {
    let r = run_check(config);
    assert_eq!(
        r.status,
        Some(0),
        "expected exit 0\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.is_empty(),
        "nothing on stderr when valid: {}",
        r.stderr
    );
    r.stdout
}

/// Runs check on `config`, expects exit 64 with a one-message stderr containing every string
/// in `needles`; returns stderr.
#[track_caller]
fn check_fails(config: &Path, needles: &[&str]) -> String {
    let r = run_check(config);
    assert_eq!(
        r.status,
        Some(EXIT_CONFIG),
        "expected exit {EXIT_CONFIG}\nstdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.is_empty(), "no summary when invalid: {}", r.stdout);
    assert!(
        r.stderr.starts_with("mcp-edge check: "),
        "stderr should be the check error: {}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "must not panic: {}",
        r.stderr
    );
    for needle in needles {
        assert!(
            r.stderr.contains(needle),
            "stderr should mention {needle:?}; got: {}",
            r.stderr
        );
    }
    r.stderr
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// A self-signed certificate for `localhost` valid from `not_before` to `not_after`
/// (seconds since the Unix epoch), written to `{stem}.pem` / `{stem}.key`.
fn self_signed(fx: &Fixture, stem: &str, not_before: u64, not_after: u64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_before = epoch + Duration::from_secs(not_before);
    params.not_after = epoch + Duration::from_secs(not_after);
    let cert = params.self_signed(&key).expect("self-sign");
    fx.write(&format!("{stem}.pem"), cert.pem());
    fx.write(&format!("{stem}.key"), key.serialize_pem());
}

// ── Valid configurations ─────────────────────────────────────────────────────────────────────

#[test]
fn valid_config_exits_0_with_summary() {
    let fx = Fixture::new();
    fx.issue("partner", &["mcp.partner.example", "*.partner.example"]);
    let config = fx.config(
        r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"
max_connections = 77

[listener.tls]
cert = "server.pem"
key = "server.key"

[[listener.tls.sni]]
names = ["mcp.partner.example", "*.partner.example"]
cert = "partner.pem"
key = "partner.key"

[admin]
bind = "127.0.0.1:9901"

[[routes]]
path = "/mcp"
upstreams = ["http://127.0.0.1:9000/mcp", "http://127.0.0.1:9001/mcp"]

[[routes]]
path = "/sse"
upstream = "http://127.0.0.1:9100/sse"
transport = "sse"
"#,
    );
    let out = check_ok(&config);

    assert!(
        out.contains(&format!("config {} is valid", show(&config))),
        "{out}"
    );
    assert!(
        out.contains(
            "listener: 127.0.0.1:8443 (public URL https://localhost:8443/), up to 77 connections"
        ),
        "{out}"
    );
    // Both certificates, with their names and days left (DevCa certificates run to 4096).
    let certs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("certificate: "))
        .collect();
    assert_eq!(certs.len(), 2, "{out}");
    assert!(certs[0].contains("names=[localhost]"), "{out}");
    assert!(
        certs[1].contains("names=[mcp.partner.example, *.partner.example]"),
        "{out}"
    );
    for line in &certs {
        assert!(line.contains("not_after=4096-01-01T00:00:00Z"), "{line}");
        let days: u64 = line
            .split('(')
            .nth(1)
            .and_then(|s| s.strip_suffix(" days left)"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no `(N days left)` in: {line}"));
        assert!(days > 365 * 1000, "{line}");
    }
    assert!(
        out.contains(
            "route /mcp [streamable-http] -> http://127.0.0.1:9000/mcp, http://127.0.0.1:9001/mcp"
        ),
        "{out}"
    );
    assert!(
        out.contains("route /sse [sse (legacy)] -> http://127.0.0.1:9100/sse"),
        "{out}"
    );
    assert!(out.contains("admin: 127.0.0.1:9901"), "{out}");
}

#[test]
fn summary_shows_limits_and_the_store_without_its_password() {
    let fx = Fixture::new();
    let config = fx.config(
        r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"

[listener.tls]
cert = "server.pem"
key = "server.key"

[limits]
store = "redis"
redis_url = "redis://:s3cret-pass@127.0.0.1:6379/1"
on_store_failure = "closed"
max_concurrent_requests = 16

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
[routes.limits]
requests_per_second = 20
burst = 40
[routes.limits.tools]
"search_*" = { requests_per_second = 0.5, burst = 2 }
"#,
    );
    let out = check_ok(&config);
    assert!(
        out.contains(
            "  limits per caller: 20/s burst 40, 16 in flight, tool search_* 0.5/s burst 2"
        ),
        "{out}"
    );
    assert!(
        out.contains("limits store: redis redis://…@127.0.0.1:6379/1 (while unreachable: closed)"),
        "{out}"
    );
    assert!(
        !out.contains("s3cret"),
        "the password is never printed: {out}"
    );
}

#[test]
fn summary_counts_days_left_until_expiry() {
    let fx = Fixture::new();
    let now = support::clock::now();
    // Ten days and an hour: the count is whole days, rounded down.
    self_signed(&fx, "soon", now - 86_400, now + 10 * 86_400 + 3_600);
    let out = check_ok(&fx.config_with("soon.pem", "soon.key", ""));
    let line = out
        .lines()
        .find(|l| l.starts_with("certificate: "))
        .unwrap_or_else(|| panic!("no certificate line: {out}"));
    assert!(line.contains("names=[localhost]"), "{line}");
    assert!(line.contains("(10 days left)"), "{line}");
}

#[test]
fn expired_certificate_fails_check() {
    let fx = Fixture::new();
    let now = support::clock::now();
    self_signed(&fx, "old", now - 30 * 86_400, now - 86_400);
    check_fails(
        &fx.config_with("old.pem", "old.key", ""),
        &[
            &format!("certificate {} expired at", show(&fx.path("old.pem"))),
            "renewed",
        ],
    );
}

#[test]
fn expired_sni_certificate_fails_check() {
    let fx = Fixture::new();
    let now = support::clock::now();
    self_signed(&fx, "old", now - 30 * 86_400, now - 86_400);
    let config = fx.config_with(
        "server.pem",
        "server.key",
        "[[listener.tls.sni]]\nnames = [\"localhost\"]\ncert = \"old.pem\"\nkey = \"old.key\"\n",
    );
    check_fails(
        &config,
        &[&format!(
            "certificate {} expired at",
            show(&fx.path("old.pem"))
        )],
    );
}

#[test]
fn https_upstream_with_ca_and_client_certificate_is_valid() {
    let fx = Fixture::new();
    fx.write_ca();
    fx.issue_client("client");
    let out = check_ok(&fx.https_upstream_config(
        "ca = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"",
    ));
    assert!(
        out.contains("route /secure [streamable-http] -> https://backend.internal:9443/mcp"),
        "{out}"
    );
}

#[test]
fn config_path_may_come_from_the_environment() {
    let fx = Fixture::new();
    let config = fx.default_config();
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-edge"))
        .arg("check")
        .env("MCP_EDGE_CONFIG", &config)
        .output()
        .expect("run mcp-edge check");
    let r = Run::from(out);
    assert_eq!(r.status, Some(0), "stderr: {}", r.stderr);
    assert!(r.stdout.contains("route /mcp"), "{}", r.stdout);
}

// ── The config file itself ───────────────────────────────────────────────────────────────────

#[test]
fn missing_config_file_is_named() {
    let fx = Fixture::new();
    let config = fx.path("does-not-exist.toml");
    check_fails(
        &config,
        &[
            &format!("cannot read config file {}", show(&config)),
            "No such file",
        ],
    );
}

#[test]
fn bad_toml_names_file_and_line() {
    let fx = Fixture::new();
    let config = fx.config("[listener\nbind = \"127.0.0.1:8443\"\n");
    check_fails(
        &config,
        &[
            &format!("config file {} is not valid", show(&config)),
            "line 1",
        ],
    );
}

#[test]
fn unknown_key_is_named() {
    let fx = Fixture::new();
    let config = fx.config_with("server.pem", "server.key", "[sse]\nheartbeat = \"1s\"\n");
    check_fails(
        &config,
        &[
            &format!("config file {} is not valid", show(&config)),
            "unknown field `heartbeat`",
            "heartbeat_interval",
        ],
    );
}

#[test]
fn invalid_value_names_the_key() {
    let fx = Fixture::new();
    let config = fx.config_with("server.pem", "server.key", "[http]\nmax_headers = 5000\n");
    check_fails(
        &config,
        &["config key `http.max_headers`", "5000 is outside 8..=1000"],
    );
}

// ── Server certificates and keys ─────────────────────────────────────────────────────────────

#[test]
fn missing_cert_file_is_named() {
    let fx = Fixture::new();
    let config = fx.config_with("nope.pem", "server.key", "");
    check_fails(
        &config,
        &[
            "listener.tls",
            &format!("cannot read {}", show(&fx.path("nope.pem"))),
            "No such file",
        ],
    );
}

#[test]
fn missing_key_file_is_named() {
    let fx = Fixture::new();
    let config = fx.config_with("server.pem", "nope.key", "");
    check_fails(
        &config,
        &[
            "listener.tls",
            &format!("cannot read {}", show(&fx.path("nope.key"))),
            "No such file",
        ],
    );
}

#[test]
fn key_that_does_not_match_the_cert_is_refused() {
    let fx = Fixture::new();
    fx.issue("other", &["localhost"]);
    let config = fx.config_with("server.pem", "other.key", "");
    check_fails(
        &config,
        &[
            "listener.tls",
            &format!(
                "private key {} does not match certificate {}",
                show(&fx.path("other.key")),
                show(&fx.path("server.pem"))
            ),
        ],
    );
}

#[test]
fn truncated_certificate_pem_is_refused() {
    let fx = Fixture::new();
    let pem = fx.read("server.pem");
    fx.write("half.pem", &pem[..pem.len() / 2]);
    let config = fx.config_with("half.pem", "server.key", "");
    check_fails(
        &config,
        &[
            "listener.tls",
            &show(&fx.path("half.pem")),
            "no usable PEM certificate",
            "missing section end marker",
        ],
    );
}

#[test]
fn certificate_with_corrupt_der_is_refused() {
    let fx = Fixture::new();
    // Well-formed PEM framing and base64, but the DER inside is cut short.
    let pem = fx.read("server.pem");
    let lines: Vec<&str> = pem.lines().collect();
    let cut = [&lines[..3], &lines[lines.len() - 1..]].concat().join("\n") + "\n";
    fx.write("cut.pem", cut);
    let config = fx.config_with("cut.pem", "server.key", "");
    check_fails(
        &config,
        &[
            "listener.tls",
            &show(&fx.path("cut.pem")),
            "not valid X.509",
        ],
    );
}

#[test]
fn garbage_key_is_refused() {
    let fx = Fixture::new();
    fx.write(
        "garbage.key",
        [
            0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x13, 0x37, b'\n', 0x80, 0x81,
        ],
    );
    let config = fx.config_with("server.pem", "garbage.key", "");
    check_fails(
        &config,
        &[
            "listener.tls",
            &show(&fx.path("garbage.key")),
            "no usable private key",
        ],
    );
}

#[test]
fn empty_key_file_is_refused() {
    let fx = Fixture::new();
    fx.write("empty.key", "");
    let config = fx.config_with("server.pem", "empty.key", "");
    check_fails(
        &config,
        &[&show(&fx.path("empty.key")), "no usable private key"],
    );
}

#[test]
fn cert_and_key_swapped_are_refused() {
    let fx = Fixture::new();
    let config = fx.config_with("server.key", "server.pem", "");
    check_fails(
        &config,
        &[
            &show(&fx.path("server.key")),
            "no usable PEM certificate",
            "BEGIN CERTIFICATE",
        ],
    );
}

// ── SNI certificates ─────────────────────────────────────────────────────────────────────────

#[test]
fn sni_name_not_covered_by_its_certificate_is_refused() {
    let fx = Fixture::new();
    fx.issue("partner", &["mcp.partner.example"]);
    let config = fx.config_with(
        "server.pem",
        "server.key",
        r#"
[[listener.tls.sni]]
names = ["mcp.partner.example", "other.example.org"]
cert = "partner.pem"
key = "partner.key"
"#,
    );
    check_fails(
        &config,
        &[
            "listener.tls",
            &format!(
                "certificate {} does not cover `other.example.org`",
                show(&fx.path("partner.pem"))
            ),
            "its names: mcp.partner.example",
        ],
    );
}

#[test]
fn sni_wildcard_not_covered_by_exact_names_is_refused() {
    let fx = Fixture::new();
    fx.issue("partner", &["a.partner.example"]);
    let config = fx.config_with(
        "server.pem",
        "server.key",
        "[[listener.tls.sni]]\nnames = [\"*.partner.example\"]\ncert = \"partner.pem\"\nkey = \"partner.key\"\n",
    );
    check_fails(
        &config,
        &["does not cover `*.partner.example`", "a.partner.example"],
    );
}

#[test]
fn sni_certificate_problems_name_the_sni_files() {
    let fx = Fixture::new();
    fx.issue("partner", &["mcp.partner.example"]);
    let sni = |cert: &str, key: &str| {
        format!(
            "[[listener.tls.sni]]\nnames = [\"mcp.partner.example\"]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        )
    };
    // Missing SNI certificate.
    check_fails(
        &fx.config_with("server.pem", "server.key", &sni("gone.pem", "partner.key")),
        &[&format!("cannot read {}", show(&fx.path("gone.pem")))],
    );
    // SNI key belonging to another certificate.
    check_fails(
        &fx.config_with(
            "server.pem",
            "server.key",
            &sni("partner.pem", "server.key"),
        ),
        &[&format!(
            "private key {} does not match certificate {}",
            show(&fx.path("server.key")),
            show(&fx.path("partner.pem"))
        )],
    );
}

// ── Upstream TLS files ───────────────────────────────────────────────────────────────────────

#[test]
fn https_upstream_with_missing_ca_file_is_refused() {
    let fx = Fixture::new();
    let config = fx.https_upstream_config("ca = \"missing-ca.pem\"");
    check_fails(
        &config,
        &[
            "routes[0] (path /secure)",
            &format!("cannot read {}", show(&fx.path("missing-ca.pem"))),
            "No such file",
        ],
    );
}

#[test]
fn https_upstream_with_a_ca_file_holding_no_certificate_is_refused() {
    let fx = Fixture::new();
    let config = fx.https_upstream_config("ca = \"server.key\"");
    check_fails(
        &config,
        &[
            "routes[0] (path /secure)",
            &show(&fx.path("server.key")),
            "no usable PEM certificate",
        ],
    );
}

#[test]
fn upstream_client_key_that_does_not_match_is_refused() {
    let fx = Fixture::new();
    fx.write_ca();
    fx.issue_client("client");
    let config = fx.https_upstream_config(
        "ca = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"server.key\"",
    );
    check_fails(
        &config,
        &[
            "routes[0] (path /secure)",
            &format!(
                "private key {} does not match certificate {}",
                show(&fx.path("server.key")),
                show(&fx.path("client.pem"))
            ),
        ],
    );
}

#[test]
fn missing_upstream_client_certificate_is_named() {
    let fx = Fixture::new();
    fx.write_ca();
    fx.issue_client("client");
    let config = fx.https_upstream_config(
        "ca = \"ca.pem\"\nclient_cert = \"gone.pem\"\nclient_key = \"client.key\"",
    );
    check_fails(
        &config,
        &[
            "routes[0] (path /secure)",
            &format!("cannot read {}", show(&fx.path("gone.pem"))),
        ],
    );
}

#[test]
fn client_ca_crl_and_alert_ca_files_are_checked_too() {
    let fx = Fixture::new();
    fx.write_ca();
    check_fails(
        &fx.config_with(
            "server.pem",
            "server.key",
            "client_auth = \"optional\"\nclient_ca = \"missing-ca.pem\"\n",
        ),
        &["missing-ca.pem"],
    );
    check_fails(
        &fx.config_with(
            "server.pem",
            "server.key",
            "client_auth = \"optional\"\nclient_ca = \"ca.pem\"\nclient_crls = [\"missing.crl\"]\n",
        ),
        &["missing.crl"],
    );
    check_fails(
        &fx.config_with(
            "server.pem",
            "server.key",
            "[certs.webhook]\nurl = \"https://alerts.example.com/hook\"\nca = \"missing-alerts-ca.pem\"\n",
        ),
        &["missing-alerts-ca.pem"],
    );
}

#[test]
fn several_issuers_need_every_token_route_to_list_its_issuers() {
    let fx = Fixture::new();
    let text = |issuers: &str| {
        format!(
            r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"

[listener.tls]
cert = "server.pem"
key = "server.key"

[auth]
organisation_claim = "org_id"

[[auth.issuers]]
issuer = "https://idp.example.com"
algorithms = ["ES256"]
pem_keys = ["idp.pem"]

[[auth.issuers]]
issuer = "https://login.partner-a.example"
algorithms = ["ES256"]
pem_keys = ["partner-a.pem"]

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
[routes.auth]
require = "token"
{issuers}
"#
        )
    };
    check_fails(
        &fx.config(&text("")),
        &[
            "config key `routes[0].auth.issuers`",
            "is required",
            "2 [[auth.issuers]]",
            "issuers = [\"https://idp.example.com\"]",
        ],
    );
    check_ok(&fx.config(&text("issuers = [\"https://login.partner-a.example\"]")));
}

// ── The public_url host, as start-up and reloads judge it ────────────────────────────────────

/// A config like [`Fixture::config_with`] but with `public_url` set to `url`.
fn with_public_url(fx: &Fixture, url: &str, cert: &str, extra: &str) -> PathBuf {
    let path = fx.config_with(&format!("{cert}.pem"), &format!("{cert}.key"), extra);
    let text = fx.read("edge.toml").replace(
        "public_url = \"https://localhost:8443\"",
        &format!("public_url = \"{url}\""),
    );
    fx.write("edge.toml", text);
    path
}

#[test]
fn ip_public_url_needs_an_ip_san_in_the_default_certificate() {
    let fx = Fixture::new();
    fx.issue("dns_only", &["localhost"]);
    for (url, host) in [
        ("https://127.0.0.1:8443", "127.0.0.1"),
        ("https://[::1]:8443", "::1"),
    ] {
        let config = with_public_url(&fx, url, "dns_only", "");
        check_fails(
            &config,
            &[
                &format!(
                    "listener.public_url: certificate {} does not cover `{host}`",
                    show(&fx.path("dns_only.pem"))
                ),
                "it names [localhost]",
                "IP SAN",
            ],
        );
    }
    // The fixture's default certificate carries 127.0.0.1.
    let out = check_ok(&with_public_url(
        &fx,
        "https://127.0.0.1:8443",
        "server",
        "",
    ));
    assert!(out.contains("public URL https://127.0.0.1:8443/"), "{out}");
}

#[test]
fn public_url_host_may_be_served_by_an_sni_certificate() {
    let fx = Fixture::new();
    fx.issue("edge", &["edge.example"]);
    check_fails(
        &with_public_url(&fx, "https://edge.example", "server", ""),
        &[
            "does not cover `edge.example`",
            "it names [localhost, 127.0.0.1]",
        ],
    );
    let sni = "[[listener.tls.sni]]\nnames = [\"edge.example\"]\ncert = \"edge.pem\"\nkey = \"edge.key\"\n";
    check_ok(&with_public_url(&fx, "https://edge.example", "server", sni));
}

#[test]
fn certificate_not_valid_yet_fails_check() {
    let fx = Fixture::new();
    let now = support::clock::now();
    self_signed(&fx, "early", now + 86_400, now + 30 * 86_400);
    check_fails(
        &fx.config_with("early.pem", "early.key", ""),
        &[
            &format!(
                "certificate {} is not valid before",
                show(&fx.path("early.pem"))
            ),
            "clock",
        ],
    );
}
