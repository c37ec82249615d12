//! Every certificate and CRL the configuration puts in use, with how long each has left.
//!
//! [`inventory`] reads the files fresh each time (it is what `mcp-edge certs status`, the admin
//! `/certs` page, the expiry gauges and the alert engine look at), so it reports what is on
//! disk now, not what was loaded at start. It never fails as a whole: a file that cannot be read
//! or parsed becomes an entry with [`CertStatus::error`] set and level
//! [`Level::Critical`], because an unreadable file blocks the next reload just like an expiring
//! certificate would.
//!
//! Entries come in config order: the default server chain, each SNI chain, the client CA bundle,
//! the client CRLs, each issuer's JWKS and introspection CA, each route's upstream CA and client
//! certificate, and the webhook CA.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use serde::{Serialize, Serializer};

use super::CertError;

/// Seconds in a day, for the "days left" figures.
const DAY: i64 = 86_400;
/// Width of the SANS column in [`table`] before names are elided.
const SANS_WIDTH: usize = 40;

/// What a certificate is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    /// The end-entity certificate the listener serves (default or SNI).
    ServerLeaf,
    /// An intermediate (or root) certificate sent after a server leaf.
    ServerChain,
    /// A CA that issues client certificates (`listener.tls.client_ca`).
    ClientCa,
    /// A CRL for client certificates; its `not_after` is the nextUpdate.
    Crl,
    /// A CA that verifies the issuer's JWKS or introspection endpoint.
    IssuerCa,
    /// A CA that verifies an HTTPS upstream.
    UpstreamCa,
    /// A client certificate (or its chain) presented to an upstream.
    UpstreamClient,
    /// A CA that verifies the alert webhook receiver.
    WebhookCa,
}

impl CertKind {
    /// The name used in JSON, tables, logs and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::ServerLeaf => "server_leaf",
            CertKind::ServerChain => "server_chain",
            CertKind::ClientCa => "client_ca",
            CertKind::Crl => "crl",
            CertKind::IssuerCa => "issuer_ca",
            CertKind::UpstreamCa => "upstream_ca",
            CertKind::UpstreamClient => "upstream_client",
            CertKind::WebhookCa => "webhook_ca",
        }
    }
}

/// How urgent an entry is; ordered from harmless to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// More than `certs.warn_before` left.
    Ok,
    /// Within `certs.warn_before`.
    Warning,
    /// Within `certs.critical_before`, or the file is unreadable.
    Critical,
    /// Past its not-after (a CRL: past its nextUpdate).
    Expired,
}

impl Level {
    /// The level for an entry with `seconds_left`, given the configured thresholds.
    pub fn for_remaining(
        seconds_left: i64,
        warn_before: Duration,
        critical_before: Duration,
    ) -> Self {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if seconds_left <= 0 {
            Level::Expired
        } else if seconds_left <= secs(critical_before) {
            Level::Critical
        } else if seconds_left <= secs(warn_before) {
            Level::Warning
        } else {
            Level::Ok
        }
    }

    /// The lower-case name used in JSON, logs and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
            Level::Expired => "expired",
        }
    }
}

/// One certificate (or CRL) in use and how close it is to expiry.
#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    /// What it is used for.
    pub kind: CertKind,
    /// The config key naming the file, e.g. `listener.tls.sni[0].cert`.
    pub source: String,
    /// The file it was read from.
    #[serde(serialize_with = "display_path")]
    pub path: PathBuf,
    /// Subject DN (for a CRL: its issuer); empty when the file could not be read.
    pub subject: String,
    /// Subject alternative names: DNS names, IP addresses, URIs and e-mail addresses.
    pub sans: Vec<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Start of validity (for a CRL: thisUpdate).
    #[serde(serialize_with = "rfc3339")]
    pub not_before: Option<SystemTime>,
    /// End of validity (for a CRL: nextUpdate).
    #[serde(serialize_with = "rfc3339")]
    pub not_after: Option<SystemTime>,
    /// Seconds until `not_after`: negative once past, 0 when the file could not be read.
    pub seconds_left: i64,
    /// Urgency under the configured thresholds.
    pub level: Level,
    /// Why the file could not be read or parsed (the level is then critical).
    pub error: Option<String>,
}

impl CertStatus {
    /// Whole days left, rounded down (so an expired entry shows a negative number).
    pub fn days_left(&self) -> i64 {
        self.seconds_left.div_euclid(DAY)
    }

    /// `not_after` as RFC 3339 (seconds), if known.
    pub fn not_after_rfc3339(&self) -> Option<String> {
        self.not_after
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
    }
}

/// The `certs status --json` and admin `/certs` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    /// Every entry, in config order.
    pub certificates: &'a [CertStatus],
    /// The most urgent level among them.
    pub worst: Level,
}

impl<'a> Report<'a> {
    /// Wraps an inventory.
    pub fn new(certificates: &'a [CertStatus]) -> Self {
        Report {
            certificates,
            worst: worst(certificates),
        }
    }
}

/// The most urgent level in `statuses` ([`Level::Ok`] when empty).
pub fn worst(statuses: &[CertStatus]) -> Level {
    statuses.iter().map(|s| s.level).max().unwrap_or(Level::Ok)
}

fn display_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    // `Path`'s own impl fails on non-UTF-8 names; a report must never fail over a file name.
    s.collect_str(&path.display())
}

fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
        None => s.serialize_none(),
    }
}

/// One file the configuration puts in use, with the config key that names it.
#[derive(Debug, Clone)]
pub enum CertFile<'a> {
    /// A certificate whose first block is of `kind` and the rest its chain.
    Chain {
        /// Config key, e.g. `listener.tls.cert`.
        key: String,
        /// The file.
        path: &'a Path,
        /// What the first certificate is.
        kind: CertKind,
    },
    /// A bundle of CA certificates of `kind`.
    Bundle {
        /// Config key.
        key: String,
        /// The file.
        path: &'a Path,
        /// What the certificates are.
        kind: CertKind,
    },
    /// A file of CRLs.
    Crls {
        /// Config key.
        key: String,
        /// The file.
        path: &'a Path,
    },
}

/// What an inventory is taken of: the certificate files in use, in config order, and the
/// expiry thresholds. The configuration implements it (so this module needs no config types).
pub trait CertSources {
    /// `(warn_before, critical_before)`.
    fn thresholds(&self) -> (Duration, Duration);
    /// Every certificate and CRL file in use, in config order.
    fn cert_files(&self) -> Vec<CertFile<'_>>;
}

impl<T: CertSources + ?Sized> CertSources for std::sync::Arc<T> {
    fn thresholds(&self) -> (Duration, Duration) {
        (**self).thresholds()
    }
    fn cert_files(&self) -> Vec<CertFile<'_>> {
        (**self).cert_files()
    }
}

/// Lists every certificate and CRL `src` puts in use, in config order, as of `now`.
pub fn inventory<S: CertSources + ?Sized>(src: &S, now: SystemTime) -> Vec<CertStatus> {
    let (warn_before, critical_before) = src.thresholds();
    let mut out = Inventory {
        now,
        warn_before,
        critical_before,
        entries: Vec::new(),
    };
    for file in src.cert_files() {
        match file {
            CertFile::Chain { key, path, kind } => out.chain(key, path, kind),
            CertFile::Bundle { key, path, kind } => out.bundle(key, path, kind),
            CertFile::Crls { key, path } => out.crls(key, path),
        }
    }
    out.entries
}

/// Accumulates entries; knows the clock and thresholds.
struct Inventory {
    now: SystemTime,
    warn_before: Duration,
    critical_before: Duration,
    entries: Vec<CertStatus>,
}

/// What one certificate or CRL says about itself.
struct Parsed {
    subject: String,
    sans: Vec<String>,
    issuer: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Inventory {
    /// A certificate file whose first block is `first_kind` and the rest are its chain.
    fn chain(&mut self, source: String, path: &Path, first_kind: CertKind) {
        let rest_kind = match first_kind {
            CertKind::ServerLeaf => CertKind::ServerChain,
            other => other,
        };
        self.certificates(source, path, first_kind, rest_kind);
    }

    /// A CA bundle: every block has the same kind.
    fn bundle(&mut self, source: String, path: &Path, kind: CertKind) {
        self.certificates(source, path, kind, kind);
    }

    fn certificates(&mut self, source: String, path: &Path, first: CertKind, rest: CertKind) {
        let ders = match super::read_certificates(path) {
            Ok(d) => d,
            Err(e) => return self.failed(first, source, path, &e),
        };
        for (i, der) in ders.iter().enumerate() {
            let kind = if i == 0 { first } else { rest };
            match parse_certificate(path, der.as_ref()) {
                Ok(p) => self.push(kind, source.clone(), path, p),
                Err(e) => self.failed(kind, source.clone(), path, &e),
            }
        }
    }

    fn crls(&mut self, source: String, path: &Path) {
        let bad = |reason: String| CertError::BadCrl {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(error) => {
                let e = CertError::Read {
                    path: path.to_path_buf(),
                    error,
                };
                return self.failed(CertKind::Crl, source, path, &e);
            }
        };
        let crls: Vec<CertificateRevocationListDer<'static>> =
            match CertificateRevocationListDer::pem_slice_iter(&bytes).collect() {
                Ok(c) => c,
                Err(e) => return self.failed(CertKind::Crl, source, path, &bad(e.to_string())),
            };
        if crls.is_empty() {
            let e = bad("no X509 CRL block found".into());
            return self.failed(CertKind::Crl, source, path, &e);
        }
        for crl in &crls {
            match parse_crl(crl.as_ref()) {
                Ok(p) => self.push(CertKind::Crl, source.clone(), path, p),
                Err(reason) => self.failed(CertKind::Crl, source.clone(), path, &bad(reason)),
            }
        }
    }

    fn push(&mut self, kind: CertKind, source: String, path: &Path, p: Parsed) {
        let seconds_left = seconds_between(self.now, p.not_after);
        self.entries.push(CertStatus {
            kind,
            source,
            path: path.to_path_buf(),
            subject: p.subject,
            sans: p.sans,
            issuer: p.issuer,
            not_before: Some(p.not_before),
            not_after: Some(p.not_after),
            seconds_left,
            level: Level::for_remaining(seconds_left, self.warn_before, self.critical_before),
            error: None,
        });
    }

    fn failed(&mut self, kind: CertKind, source: String, path: &Path, error: &CertError) {
        self.entries.push(CertStatus {
            kind,
            source,
            path: path.to_path_buf(),
            subject: String::new(),
            sans: Vec::new(),
            issuer: String::new(),
            not_before: None,
            not_after: None,
            seconds_left: 0,
            level: Level::Critical,
            error: Some(error.to_string()),
        });
    }
}

/// Whole seconds from `now` to `then`; negative (rounded away from zero) once `then` is past.
fn seconds_between(now: SystemTime, then: SystemTime) -> i64 {
    match then.duration_since(now) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            -i64::try_from(secs).unwrap_or(i64::MAX)
        }
    }
}

fn to_system(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn parse_certificate(path: &Path, der: &[u8]) -> Result<Parsed, CertError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::BadX509 {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut sans = Vec::new();
    // A malformed SAN extension still leaves the validity dates worth reporting.
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                GeneralName::URI(u) => sans.push((*u).to_owned()),
                GeneralName::RFC822Name(m) => sans.push((*m).to_owned()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        sans.push(std::net::IpAddr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        sans.push(std::net::IpAddr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Parsed {
        subject: cert.subject().to_string(),
        sans,
        issuer: cert.issuer().to_string(),
        not_before: to_system(cert.validity().not_before),
        not_after: to_system(cert.validity().not_after),
    })
}

fn parse_crl(der: &[u8]) -> Result<Parsed, String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| e.to_string())?;
    // RFC 5280 requires nextUpdate; without it there is no date to warn about, and the
    // listener refuses such a CRL anyway (see `load_crls`).
    let next = crl.next_update().ok_or("CRL has no nextUpdate")?;
    let issuer = crl.issuer().to_string();
    Ok(Parsed {
        subject: issuer.clone(),
        sans: Vec::new(),
        issuer,
        not_before: to_system(crl.last_update()),
        not_after: to_system(next),
    })
}

/// The `certs status` table: one row per entry, then one line per unreadable file.
pub fn table(statuses: &[CertStatus]) -> String {
    const HEADER: [&str; 8] = [
        "KIND",
        "SOURCE",
        "SUBJECT",
        "SANS",
        "ISSUER",
        "NOT AFTER",
        "DAYS LEFT",
        "LEVEL",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 8]> = statuses
        .iter()
        .map(|s| {
            let or_dash = |v: &str| if v.is_empty() { dash() } else { v.to_owned() };
            let (not_after, days) = match s.not_after_rfc3339() {
                Some(t) => (t, s.days_left().to_string()),
                None => (dash(), dash()),
            };
            [
                s.kind.as_str().to_owned(),
                s.source.clone(),
                or_dash(&s.subject),
                elide_sans(&s.sans),
                or_dash(&s.issuer),
                not_after,
                days,
                s.level.as_str().to_ascii_uppercase(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    let errors: Vec<&CertStatus> = statuses.iter().filter(|s| s.error.is_some()).collect();
    if !errors.is_empty() {
        out.push('\n');
        for s in errors {
            let _ = writeln!(
                out,
                "error: {}: {}",
                s.source,
                s.error.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

/// SANs joined by commas, cut to about [`SANS_WIDTH`] characters with a count of the rest.
fn elide_sans(sans: &[String]) -> String {
    if sans.is_empty() {
        return "-".into();
    }
    let all = sans.join(",");
    if all.chars().count() <= SANS_WIDTH {
        return all;
    }
    let mut shown = String::new();
    let mut used = 0;
    for san in sans {
        let more = format!(" +{} more", sans.len() - used - 1);
        let candidate = if shown.is_empty() {
            san.clone()
        } else {
            format!("{shown},{san}")
        };
        if candidate.chars().count() + more.chars().count() > SANS_WIDTH {
            break;
        }
        shown = candidate;
        used += 1;
    }
    if used == 0 {
        // Even the first name is too long: cut it rather than show nothing.
        let keep = SANS_WIDTH.saturating_sub(12);
        shown = sans[0].chars().take(keep).collect::<String>() + "…";
        used = 1;
    }
    if used < sans.len() {
        let _ = write!(shown, " +{} more", sans.len() - used);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = DAY;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    #[test]
    fn levels_follow_thresholds() {
        let l = |s| Level::for_remaining(s, days(30), days(7));
        assert_eq!(l(100 * D), Level::Ok);
        assert_eq!(l(30 * D + 1), Level::Ok);
        assert_eq!(l(30 * D), Level::Warning);
        assert_eq!(l(20 * D), Level::Warning);
        assert_eq!(l(7 * D), Level::Critical);
        assert_eq!(l(1), Level::Critical);
        assert_eq!(l(0), Level::Expired);
        assert_eq!(l(-5 * D), Level::Expired);
        assert!(Level::Expired > Level::Critical && Level::Critical > Level::Warning);
    }

    #[test]
    fn seconds_round_away_from_zero_when_past() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(seconds_between(now, now + Duration::from_millis(1500)), 1);
        assert_eq!(seconds_between(now, now - Duration::from_millis(1500)), -2);
        assert_eq!(seconds_between(now, now), 0);
    }

    fn status(seconds_left: i64, level: Level, sans: &[&str]) -> CertStatus {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        CertStatus {
            kind: CertKind::ServerLeaf,
            source: "listener.tls.cert".into(),
            path: "/etc/mcp-edge/server.pem".into(),
            subject: "CN=edge.example".into(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            issuer: "CN=Example CA".into(),
            not_before: Some(now),
            not_after: Some(now + Duration::from_secs(seconds_left.max(0).unsigned_abs())),
            seconds_left,
            level,
            error: None,
        }
    }

    #[test]
    fn days_left_rounds_down() {
        assert_eq!(status(2 * D - 1, Level::Critical, &[]).days_left(), 1);
        assert_eq!(status(-1, Level::Expired, &[]).days_left(), -1);
        assert_eq!(status(0, Level::Expired, &[]).days_left(), 0);
    }

    #[test]
    fn worst_is_the_maximum() {
        assert_eq!(worst(&[]), Level::Ok);
        let s = [
            status(100 * D, Level::Ok, &[]),
            status(3 * D, Level::Critical, &[]),
            status(20 * D, Level::Warning, &[]),
        ];
        assert_eq!(worst(&s), Level::Critical);
    }

    #[test]
    fn sans_are_elided_with_a_count() {
        assert_eq!(elide_sans(&[]), "-");
        let few = ["a.example".to_owned(), "b.example".to_owned()];
        assert_eq!(elide_sans(&few), "a.example,b.example");
        let many: Vec<String> = (0..10).map(|i| format!("host{i}.example.com")).collect();
        let e = elide_sans(&many);
        assert!(e.starts_with("host0.example.com"), "{e}");
        assert!(e.ends_with(" more"), "{e}");
        assert!(e.chars().count() <= SANS_WIDTH, "{e}");
        let long = ["x".repeat(100)];
        let e = elide_sans(&long);
        assert!(e.ends_with('…') && e.chars().count() <= SANS_WIDTH, "{e}");
    }

    #[test]
    fn table_aligns_columns_and_lists_errors() {
        let mut broken = status(0, Level::Critical, &[]);
        broken.source = "listener.tls.sni[0].cert".into();
        broken.subject.clear();
        broken.issuer.clear();
        broken.not_after = None;
        broken.error = Some("cannot read /x.pem: No such file or directory".into());
        let t = table(&[status(20 * D, Level::Warning, &["edge.example"]), broken]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("KIND"), "{t}");
        let col = lines[0].find("LEVEL").unwrap();
        assert_eq!(&lines[1][col..], "WARNING", "{t}");
        assert_eq!(&lines[2][col..], "CRITICAL", "{t}");
        assert!(lines[1].contains("edge.example"), "{t}");
        assert!(lines[1].contains(" 20 "), "{t}");
        assert!(
            t.contains("error: listener.tls.sni[0].cert: cannot read /x.pem"),
            "{t}"
        );
    }

    #[test]
    fn json_uses_rfc3339_and_lower_case_names() {
        let s = [status(20 * D, Level::Warning, &["edge.example"])];
        let v = serde_json::to_value(Report::new(&s)).unwrap();
        assert_eq!(v["worst"], "warning");
        let c = &v["certificates"][0];
        assert_eq!(c["kind"], "server_leaf");
        assert_eq!(c["level"], "warning");
        assert_eq!(c["path"], "/etc/mcp-edge/server.pem");
        assert_eq!(c["not_before"], "2027-01-15T08:00:00Z");
        assert_eq!(c["error"], serde_json::Value::Null);
    }
}
