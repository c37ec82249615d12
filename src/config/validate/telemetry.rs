//! `[telemetry.otlp]` and the standard `OTEL_*` variables, resolved into [`TelemetrySettings`].
//!
//! Export is on when the section is present or `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; every other variable only adjusts an export
//! that is on (a platform that sets `OTEL_SERVICE_NAME` for every process does not make the
//! proxy start exporting). `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns it
//! off again. A variable overrides the key it stands for. The resolution mirrors what the
//! OTLP exporter would read from the environment itself, so what `check` prints is what runs.

use std::time::Duration;

use http::Uri;

use crate::config::ConfigError;
use crate::config::file::{OtlpFile, TelemetryFile};

/// Reads one environment variable (injected, so tests need not touch the process's).
pub(in crate::config) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the base URL (`/v1/traces` is appended for HTTP).
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the traces URL, used as written.
pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
const TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// The longest export timeout accepted: the exporter's thread is busy that long per batch.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Validated `[telemetry]`, with the environment applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetrySettings {
    /// OTLP trace export; `None`: no spans are recorded.
    pub otlp: Option<OtlpSettings>,
    /// The variable that turned a configured export off (`OTEL_SDK_DISABLED`,
    /// `OTEL_TRACES_EXPORTER`).
    pub disabled_by: Option<&'static str>,
    /// A variable that asks for export in a build without the `otel` feature (ignored there,
    /// so a platform-wide setting cannot stop the proxy from starting; start-up warns).
    pub ignored_variable: Option<&'static str>,
}

/// How spans reach the collector.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The URL exports are sent to: for HTTP the full `/v1/traces` URL, for gRPC the
    /// collector's address.
    pub endpoint: String,
    /// Where the endpoint came from: a key, a variable, or `default`.
    pub endpoint_source: &'static str,
    /// The wire protocol.
    pub protocol: OtlpProtocol,
    /// Which requests are recorded.
    pub sampling: Sampling,
    /// `service.name`.
    pub service_name: String,
    /// Longest time one export may take, retries included.
    pub timeout: Duration,
    /// Headers sent with every export, names in lower case.
    pub headers: Vec<OtlpHeader>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP `POST /v1/traces` (port 4318).
    HttpProtobuf,
    /// gRPC `TraceService/Export` (port 4317).
    Grpc,
}

impl OtlpProtocol {
    /// The name in the file and in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// The sampler: whether a caller's decision is followed, and the share of the rest recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// A request with a trace context (header or `_meta`) is recorded exactly when its caller
    /// set the sampled flag; `ratio` then decides only traces the proxy starts.
    pub parent_based: bool,
    /// Share of traces recorded, by trace id (the same trace gets the same answer everywhere).
    pub ratio: f64,
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let root = if self.ratio >= 1.0 {
            "always_on".to_owned()
        } else if self.ratio <= 0.0 {
            "always_off".to_owned()
        } else {
            format!("traceidratio {}", self.ratio)
        };
        if self.parent_based {
            write!(f, "parentbased_{root}")
        } else {
            f.write_str(&root)
        }
    }
}

/// One header sent with every export.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpHeader {
    /// Lower-case name.
    pub name: String,
    /// Value (a credential, typically: never logged).
    pub value: String,
    /// It came from `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` (which the exporter reads itself)
    /// rather than from the file.
    pub from_env: bool,
}

// By hand: the value is a secret.
impl std::fmt::Debug for OtlpHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHeader")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("from_env", &self.from_env)
            .finish()
    }
}

/// Resolves `[telemetry]` in this build: without the `otel` feature a `[telemetry.otlp]`
/// section is refused and the variables are ignored.
pub(super) fn telemetry(
    file: TelemetryFile,
    env: Env<'_>,
) -> Result<TelemetrySettings, ConfigError> {
    telemetry_for(file, env, cfg!(feature = "otel"))
}

/// [`telemetry`] as a build with (`otel_built`) or without the feature resolves it.
pub(in crate::config) fn telemetry_for(
    file: TelemetryFile,
    env: Env<'_>,
    otel_built: bool,
) -> Result<TelemetrySettings, ConfigError> {
    if otel_built {
        return resolve(file, env);
    }
    if file.otlp.is_some() {
        return Err(ConfigError::NeedsFeature {
            section: "[telemetry.otlp]",
            feature: "otel",
        });
    }
    Ok(TelemetrySettings {
        ignored_variable: [TRACES_ENDPOINT, ENDPOINT]
            .into_iter()
            .find(|v| var(env, v).is_some()),
        ..TelemetrySettings::default()
    })
}

/// A variable's value; empty counts as unset, as the specification says.
fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The first of `names` that is set, with its name.
fn first(env: Env<'_>, names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|n| var(env, n).map(|v| (n, v)))
}

fn env_err(
    variable: &'static str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Env {
        variable,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Whether export is on, and with what (the feature is built).
fn resolve(file: TelemetryFile, env: Env<'_>) -> Result<TelemetrySettings, ConfigError> {
    let asked = file.otlp.is_some() || first(env, [TRACES_ENDPOINT, ENDPOINT]).is_some();
    if !asked {
        return Ok(TelemetrySettings::default());
    }
    let f = file.otlp.unwrap_or_default();
    let otlp = otlp(&f, env)?;
    let disabled_by = disabled_by(env)?;
    Ok(TelemetrySettings {
        otlp: if disabled_by.is_some() {
            None
        } else {
            Some(otlp)
        },
        disabled_by,
        ignored_variable: None,
    })
}

/// The variable that switches export off, if one does.
fn disabled_by(env: Env<'_>) -> Result<Option<&'static str>, ConfigError> {
    let mut off = None;
    if let Some(v) = var(env, SDK_DISABLED) {
        match v.to_ascii_lowercase().as_str() {
            "true" => off = Some(SDK_DISABLED),
            "false" => {}
            _ => {
                return Err(env_err(
                    SDK_DISABLED,
                    format!("{v:?} is neither true nor false"),
                    "set it to true to turn trace export off, or unset it",
                ));
            }
        }
    }
    if let Some(v) = var(env, EXPORTER) {
        match v.as_str() {
            "none" => off = off.or(Some(EXPORTER)),
            "otlp" => {}
            _ => {
                return Err(env_err(
                    EXPORTER,
                    format!("{v:?} is not supported (only otlp and none)"),
                    "set it to otlp, or none to turn trace export off",
                ));
            }
        }
    }
    Ok(off)
}

fn otlp(f: &OtlpFile, env: Env<'_>) -> Result<OtlpSettings, ConfigError> {
    let protocol = protocol(f, env)?;
    let (endpoint, endpoint_source) = endpoint(f, env, protocol)?;
    for name in [TRACES_COMPRESSION, COMPRESSION] {
        if let Some(v) = var(env, name)
            && v != "none"
        {
            return Err(env_err(
                name,
                format!("compression {v:?} is not supported by this build"),
                "unset it (or set none): spans are sent uncompressed",
            ));
        }
    }
    Ok(OtlpSettings {
        endpoint,
        endpoint_source,
        protocol,
        sampling: sampling(f, env)?,
        service_name: service_name(f, env)?,
        timeout: timeout(f, env)?,
        headers: headers(f, env)?,
    })
}

fn protocol(f: &OtlpFile, env: Env<'_>) -> Result<OtlpProtocol, ConfigError> {
    let parse = |v: &str| match v {
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "grpc" => Ok(OtlpProtocol::Grpc),
        _ => Err(format!("{v:?} is not http/protobuf or grpc")),
    };
    const FIX: &str =
        "use \"http/protobuf\" (port 4318) or \"grpc\" (port 4317); http/json is not supported";
    if let Some((name, v)) = first(env, [TRACES_PROTOCOL, PROTOCOL]) {
        return parse(&v).map_err(|p| env_err(name, p, FIX));
    }
    match &f.protocol {
        Some(v) => parse(v).map_err(|p| ConfigError::invalid("telemetry.otlp.protocol", p, FIX)),
        None => Ok(OtlpProtocol::HttpProtobuf),
    }
}

/// Where exports go: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as written, else the base URL of
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `endpoint`, else the local collector's default port.
fn endpoint(
    f: &OtlpFile,
    env: Env<'_>,
    protocol: OtlpProtocol,
) -> Result<(String, &'static str), ConfigError> {
    let grpc = protocol == OtlpProtocol::Grpc;
    if let Some(v) = var(env, TRACES_ENDPOINT) {
        let url = check_url(&v, grpc).map_err(|(p, fix)| env_err(TRACES_ENDPOINT, p, fix))?;
        return Ok((url, TRACES_ENDPOINT));
    }
    let (raw, source) = match (var(env, ENDPOINT), &f.endpoint) {
        (Some(v), _) => (v, ENDPOINT),
        (None, Some(v)) => (v.clone(), "telemetry.otlp.endpoint"),
        (None, None) if grpc => return Ok(("http://127.0.0.1:4317".to_owned(), "default")),
        (None, None) => return Ok(("http://127.0.0.1:4318/v1/traces".to_owned(), "default")),
    };
    let fail = |(p, fix): (String, String)| {
        if source == ENDPOINT {
            env_err(ENDPOINT, p, fix)
        } else {
            ConfigError::invalid(source, p, fix)
        }
    };
    let url = check_url(&raw, grpc).map_err(fail)?;
    if grpc {
        return Ok((url, source));
    }
    // A base URL gets the signal's path; one that already names it (a vendor's documented
    // traces URL pasted into the file) is kept as written.
    let base = url.trim_end_matches('/');
    if source != ENDPOINT && base.ends_with("/v1/traces") {
        return Ok((base.to_owned(), source));
    }
    Ok((format!("{base}/v1/traces"), source))
}

/// Checks a collector URL; the problem and fix otherwise.
fn check_url(raw: &str, grpc: bool) -> Result<String, (String, String)> {
    let example = if grpc {
        "http://127.0.0.1:4317"
    } else {
        "http://127.0.0.1:4318"
    };
    let uri: Uri = raw.parse().map_err(|_| {
        (
            format!("{raw:?} is not a URL"),
            format!("write the collector's URL, e.g. \"{example}\""),
        )
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err((
            format!("{raw:?} is not an http:// or https:// URL"),
            format!("write the collector's URL with its scheme, e.g. \"{example}\""),
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err((
            format!("{raw:?} has no host"),
            format!("write the collector's URL, e.g. \"{example}\""),
        ));
    };
    if authority.as_str().contains('@') {
        return Err((
            "has user info (a credential in the URL would be printed by `check` and logs)"
                .to_owned(),
            "remove it and send the credential in headers instead".to_owned(),
        ));
    }
    if authority.host().is_empty() {
        return Err((
            format!("{raw:?} has no host"),
            format!("write the collector's URL, e.g. \"{example}\""),
        ));
    }
    if uri.query().is_some() {
        return Err((
            "has a query string".to_owned(),
            "remove it: OTLP endpoints take none (send credentials in headers)".to_owned(),
        ));
    }
    if grpc && !matches!(uri.path(), "" | "/") {
        return Err((
            format!("{raw:?} has a path, which gRPC does not use"),
            format!("write only the scheme, host and port, e.g. \"{example}\""),
        ));
    }
    Ok(raw.to_owned())
}

fn sampling(f: &OtlpFile, env: Env<'_>) -> Result<Sampling, ConfigError> {
    let ratio_fix = "write a share between 0.0 (none) and 1.0 (every trace), e.g. 0.1";
    let ratio = match f.sample_ratio {
        Some(r) if !(r.is_finite() && (0.0..=1.0).contains(&r)) => {
            return Err(ConfigError::invalid(
                "telemetry.otlp.sample_ratio",
                format!("{r} is not between 0.0 and 1.0"),
                ratio_fix,
            ));
        }
        Some(r) => r,
        None => 1.0,
    };
    // (parent based, fixed ratio or `None` for one taken from the argument)
    let (parent_based, fixed) = match var(env, SAMPLER) {
        None => (true, None),
        Some(v) => match v.as_str() {
            "always_on" => (false, Some(1.0)),
            "always_off" => (false, Some(0.0)),
            "traceidratio" => (false, None),
            "parentbased_always_on" => (true, Some(1.0)),
            "parentbased_always_off" => (true, Some(0.0)),
            "parentbased_traceidratio" => (true, None),
            _ => {
                return Err(env_err(
                    SAMPLER,
                    format!("{v:?} is not a supported sampler"),
                    "use parentbased_traceidratio, parentbased_always_on, parentbased_always_off, traceidratio, always_on or always_off",
                ));
            }
        },
    };
    if let Some(r) = fixed {
        // The argument only means something to the ratio samplers (the specification: ignored).
        return Ok(Sampling {
            parent_based,
            ratio: r,
        });
    }
    let ratio = match var(env, SAMPLER_ARG) {
        None => ratio,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if r.is_finite() && (0.0..=1.0).contains(&r) => r,
            _ => {
                return Err(env_err(
                    SAMPLER_ARG,
                    format!("{v:?} is not a number between 0.0 and 1.0"),
                    ratio_fix,
                ));
            }
        },
    };
    Ok(Sampling {
        parent_based,
        ratio,
    })
}

fn service_name(f: &OtlpFile, env: Env<'_>) -> Result<String, ConfigError> {
    let check = |v: &str| {
        if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
            Err((
                "must be 1 to 255 characters with no control characters".to_owned(),
                "name the service as your tracing backend should show it, e.g. \"mcp-edge\"",
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    if let Some(v) = var(env, SERVICE_NAME) {
        return check(&v).map_err(|(p, fix)| env_err(SERVICE_NAME, p, fix));
    }
    match &f.service_name {
        Some(v) => {
            check(v).map_err(|(p, fix)| ConfigError::invalid("telemetry.otlp.service_name", p, fix))
        }
        None => Ok("mcp-edge".to_owned()),
    }
}

fn timeout(f: &OtlpFile, env: Env<'_>) -> Result<Duration, ConfigError> {
    let problem = |t: Duration| {
        if t.is_zero() {
            Some("must be longer than zero")
        } else if t > MAX_TIMEOUT {
            Some("is longer than 60s")
        } else {
            None
        }
    };
    let fix = "the exporter retries within this time and spans queue meanwhile: keep it near the default 10s";
    if let Some((name, v)) = first(env, [TRACES_TIMEOUT, TIMEOUT]) {
        let t = v.parse::<u64>().map(Duration::from_millis).map_err(|_| {
            env_err(
                name,
                format!("{v:?} is not a whole number of milliseconds"),
                "write milliseconds, e.g. 10000",
            )
        })?;
        return match problem(t) {
            Some(p) => Err(env_err(name, p, fix)),
            None => Ok(t),
        };
    }
    let t = f.timeout.unwrap_or(Duration::from_secs(10));
    match problem(t) {
        Some(p) => Err(ConfigError::invalid("telemetry.otlp.timeout", p, fix)),
        None => Ok(t),
    }
}

/// The file's headers, then those of `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or (when that is
/// unset) `OTEL_EXPORTER_OTLP_HEADERS` over them, as the exporter itself reads them.
fn headers(f: &OtlpFile, env: Env<'_>) -> Result<Vec<OtlpHeader>, ConfigError> {
    let mut out: Vec<OtlpHeader> = Vec::new();
    for (name, value) in &f.headers {
        let key = format!("telemetry.otlp.headers.\"{name}\"");
        let h =
            header(name, value, false).map_err(|(p, fix)| ConfigError::invalid(&key, p, fix))?;
        if out.iter().any(|o| o.name == h.name) {
            return Err(ConfigError::invalid(
                key,
                "is the same header as another one (names are case-insensitive)",
                "keep one of them",
            ));
        }
        out.push(h);
    }
    // The exporter reads the traces variable instead of (not on top of) the general one.
    let Some((var_name, list)) = [TRACES_HEADERS, HEADERS]
        .into_iter()
        .find_map(|n| env(n).map(|v| (n, v)))
    else {
        return Ok(out);
    };
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(env_err(
                var_name,
                "has an entry without `=`",
                "write name=value pairs separated by commas, e.g. api-key=SECRET,tenant=a",
            ));
        };
        let value = percent_decode(value.trim()).ok_or_else(|| {
            env_err(
                var_name,
                format!("the value of {:?} has a broken %-escape", name.trim()),
                "escape as %XX (hex) of UTF-8 bytes, e.g. %2C for a comma",
            )
        })?;
        let h = header(name.trim(), &value, true).map_err(|(p, fix)| env_err(var_name, p, fix))?;
        out.retain(|o| o.name != h.name);
        out.push(h);
    }
    Ok(out)
}

/// Header names the exporter sets itself, or that belong to the connection.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
];

fn header(name: &str, value: &str, from_env: bool) -> Result<OtlpHeader, (String, String)> {
    let parsed = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        (
            format!("{name:?} is not a valid header name"),
            "use letters, digits and -, e.g. x-api-key".to_owned(),
        )
    })?;
    let lower = parsed.as_str();
    if RESERVED.contains(&lower) || lower.starts_with("grpc-") {
        return Err((
            format!("header {lower} is set by the exporter itself"),
            "remove it".to_owned(),
        ));
    }
    // Names are not secret; values are, so the problem never quotes them.
    if value.is_empty() || http::HeaderValue::from_str(value).is_err() {
        return Err((
            format!("the value of header {lower} is empty or not printable ASCII"),
            "write the value as printable ASCII (percent-escape other bytes in the variable)"
                .to_owned(),
        ));
    }
    Ok(OtlpHeader {
        name: lower.to_owned(),
        value: value.to_owned(),
        from_env,
    })
}

/// Decodes `%XX` escapes (the W3C baggage format of the `HEADERS` variables).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
