//! `[telemetry.otlp]` and the `OTEL_*` variables: when export is on, precedence, defaults,
//! and every error. The variables are injected (the process environment is shared by every
//! test thread), and both builds' behaviour is tested in either build.

use std::collections::HashMap;

use super::*;
use crate::config::file::TelemetryFile;
use crate::config::validate::telemetry::telemetry_for;

/// Resolves the `[telemetry]` table `table` (its body, e.g. `"[otlp]\n…"`) under `vars`, as a
/// build with the `otel` feature does.
fn resolve(table: &str, vars: &[(&str, &str)]) -> Result<TelemetrySettings, ConfigError> {
    resolve_in(table, vars, true)
}

fn resolve_in(
    table: &str,
    vars: &[(&str, &str)],
    otel_built: bool,
) -> Result<TelemetrySettings, ConfigError> {
    let file: TelemetryFile = toml::from_str(table).expect("telemetry table parses");
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    telemetry_for(file, &|name| vars.get(name).cloned(), otel_built)
}

fn otlp(table: &str, vars: &[(&str, &str)]) -> OtlpSettings {
    match resolve(table, vars) {
        Ok(TelemetrySettings { otlp: Some(o), .. }) => o,
        Ok(t) => panic!("export expected to be on: {t:?}"),
        Err(e) => panic!("expected valid telemetry settings, got: {e}"),
    }
}

/// Asserts a refusal at key `key` whose problem mentions every string of `problem_has`.
#[track_caller]
fn bad_key(table: &str, vars: &[(&str, &str)], key: &str, problem_has: &[&str]) {
    let err = resolve(table, vars).expect_err("expected a refusal");
    let shown = err.to_string();
    let ConfigError::Invalid {
        key: got, problem, ..
    } = err
    else {
        panic!("expected ConfigError::Invalid for `{key}`, got: {shown}");
    };
    assert_eq!(got, key, "{shown}");
    for n in problem_has {
        assert!(problem.contains(n), "problem should mention {n:?}: {shown}");
    }
}

/// Asserts a refusal naming variable `variable`, its problem mentioning `problem_has`, with
/// a fix; returns the message.
#[track_caller]
fn bad_var(table: &str, vars: &[(&str, &str)], variable: &str, problem_has: &[&str]) -> String {
    let err = resolve(table, vars).expect_err("expected a refusal");
    let shown = err.to_string();
    let ConfigError::Env {
        variable: got,
        problem,
        fix,
    } = err
    else {
        panic!("expected ConfigError::Env for `{variable}`, got: {shown}");
    };
    assert_eq!(got, variable, "{shown}");
    for n in problem_has {
        assert!(problem.contains(n), "problem should mention {n:?}: {shown}");
    }
    assert!(!fix.is_empty(), "no fix: {shown}");
    assert!(
        shown.starts_with(&format!("environment variable `{variable}`: ")),
        "{shown}"
    );
    shown
}

const ON: &str = "[otlp]\n";

#[test]
fn off_unless_the_section_or_an_endpoint_variable_is_there() {
    let t = resolve("", &[]).expect("valid");
    assert_eq!(t, TelemetrySettings::default());
    // Variables that only adjust an export do not start one, and are not even checked.
    let t = resolve(
        "",
        &[
            ("OTEL_SERVICE_NAME", "svc"),
            ("OTEL_TRACES_SAMPLER", "xray"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    )
    .expect("valid");
    assert!(t.otlp.is_none());
    let o = otlp(
        "",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
    );
    assert_eq!(o.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(o.endpoint_source, "OTEL_EXPORTER_OTLP_ENDPOINT");
    let o = otlp(
        "",
        &[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/custom",
        )],
    );
    assert_eq!(
        o.endpoint, "http://collector:4318/custom",
        "used as written"
    );
    // Empty counts as unset.
    assert!(
        resolve("", &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])
            .expect("valid")
            .otlp
            .is_none()
    );
}

#[test]
fn defaults() {
    let o = otlp(ON, &[]);
    assert_eq!(o.endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(o.endpoint_source, "default");
    assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(
        o.sampling,
        Sampling {
            parent_based: true,
            ratio: 1.0
        }
    );
    assert_eq!(o.sampling.to_string(), "parentbased_always_on");
    assert_eq!(o.service_name, "mcp-edge");
    assert_eq!(o.timeout, Duration::from_secs(10));
    assert!(o.headers.is_empty());
    let g = otlp("[otlp]\nprotocol = \"grpc\"", &[]);
    assert_eq!(g.endpoint, "http://127.0.0.1:4317");
    assert_eq!(g.protocol, OtlpProtocol::Grpc);
}

#[test]
fn every_key() {
    let o = otlp(
        r#"[otlp]
endpoint = "https://otlp.example.com/base/"
protocol = "http/protobuf"
sample_ratio = 0.25
service_name = "edge-eu"
timeout = "3s"
headers = { "X-API-Key" = "s3cret", tenant = "a%2Cb" }
"#,
        &[],
    );
    assert_eq!(o.endpoint, "https://otlp.example.com/base/v1/traces");
    assert_eq!(o.endpoint_source, "telemetry.otlp.endpoint");
    assert_eq!(o.sampling.ratio, 0.25);
    assert_eq!(o.sampling.to_string(), "parentbased_traceidratio 0.25");
    assert_eq!(o.service_name, "edge-eu");
    assert_eq!(o.timeout, Duration::from_secs(3));
    let names: Vec<_> = o.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["x-api-key", "tenant"], "names lower-cased");
    assert_eq!(
        o.headers[1].value, "a%2Cb",
        "file values are taken literally"
    );
    assert!(
        !format!("{o:?}").contains("s3cret"),
        "Debug never shows header values"
    );
    // A URL that already names the traces path is kept.
    let o = otlp(
        "[otlp]\nendpoint = \"https://otlp.example.com/v1/traces\"",
        &[],
    );
    assert_eq!(o.endpoint, "https://otlp.example.com/v1/traces");
    let g = otlp(
        "[otlp]\nprotocol = \"grpc\"\nendpoint = \"https://collector:4317\"",
        &[],
    );
    assert_eq!(g.endpoint, "https://collector:4317", "gRPC: no path added");
}

#[test]
fn variables_override_the_file() {
    let file = r#"[otlp]
endpoint = "http://file:4318"
protocol = "grpc"
sample_ratio = 0.5
service_name = "from-file"
timeout = "3s"
headers = { a = "file", b = "file" }
"#;
    let o = otlp(
        file,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/otlp"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "B=env%2C1, c = env "),
        ],
    );
    assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(o.endpoint, "http://env:4318/otlp/v1/traces");
    assert_eq!(o.service_name, "from-env");
    assert_eq!(o.timeout, Duration::from_millis(1500));
    assert_eq!(
        o.sampling,
        Sampling {
            parent_based: true,
            ratio: 0.1
        },
        "the argument applies to the default sampler"
    );
    let h: Vec<_> = o
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str(), h.from_env))
        .collect();
    assert_eq!(
        h,
        [
            ("a", "file", false),
            ("b", "env,1", true),
            ("c", "env", true)
        ]
    );

    // The traces variables win over the general ones, and the traces headers replace the
    // general list rather than adding to it (as the exporter reads them).
    let o = otlp(
        file,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x=general"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "y=traces"),
        ],
    );
    assert_eq!(o.protocol, OtlpProtocol::Grpc);
    assert_eq!(o.endpoint, "http://traces:4317");
    assert_eq!(o.endpoint_source, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    assert_eq!(o.timeout, Duration::from_millis(2500));
    let names: Vec<_> = o.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "y"]);
}

#[test]
fn samplers() {
    let s = |v: &str, arg: Option<&str>| {
        let mut vars = vec![("OTEL_TRACES_SAMPLER", v)];
        if let Some(a) = arg {
            vars.push(("OTEL_TRACES_SAMPLER_ARG", a));
        }
        otlp("[otlp]\nsample_ratio = 0.5", &vars).sampling
    };
    let on = |parent_based, ratio| Sampling {
        parent_based,
        ratio,
    };
    assert_eq!(s("always_on", None), on(false, 1.0));
    assert_eq!(s("always_off", None), on(false, 0.0));
    assert_eq!(
        s("traceidratio", None),
        on(false, 0.5),
        "ratio from the file"
    );
    assert_eq!(s("traceidratio", Some("0.2")), on(false, 0.2));
    assert_eq!(
        s("parentbased_always_on", Some("0.2")),
        on(true, 1.0),
        "argument ignored"
    );
    assert_eq!(s("parentbased_always_off", None), on(true, 0.0));
    assert_eq!(s("parentbased_traceidratio", Some("0")), on(true, 0.0));
    assert_eq!(on(false, 0.0).to_string(), "always_off");
}

#[test]
fn switched_off_by_variables() {
    for (name, value) in [
        ("OTEL_SDK_DISABLED", "TRUE"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        let t = resolve(ON, &[(name, value)]).expect("valid");
        assert!(t.otlp.is_none(), "{name}");
        assert_eq!(t.disabled_by, Some(name));
    }
    let t = resolve(
        ON,
        &[
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ],
    )
    .expect("valid");
    assert!(t.otlp.is_some());
    // Switched off, the section is still checked: a typo does not wait for the switch.
    bad_key(
        "[otlp]\nsample_ratio = 2.0",
        &[("OTEL_SDK_DISABLED", "true")],
        "telemetry.otlp.sample_ratio",
        &["between 0.0 and 1.0"],
    );
}

#[test]
fn without_the_feature_the_section_is_refused_and_variables_ignored() {
    let err = resolve_in(ON, &[], false).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "`[telemetry.otlp]` needs a build with `--features otel`; rebuild or remove the section"
    );
    let t = resolve_in(
        "",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
        false,
    )
    .expect("a platform-wide variable does not stop the proxy");
    assert!(t.otlp.is_none());
    assert_eq!(t.ignored_variable, Some("OTEL_EXPORTER_OTLP_ENDPOINT"));
    assert_eq!(
        resolve_in("", &[], false).expect("valid"),
        TelemetrySettings::default()
    );
}

/// Through the whole config path, in whichever build this is.
#[test]
fn the_section_in_a_config_file() {
    let text = with_tables("[telemetry.otlp]\nservice_name = \"edge\"");
    if cfg!(feature = "otel") {
        // Assumes the test process has no OTEL_* variables set.
        let c = ok(&text);
        assert_eq!(
            c.telemetry.otlp.expect("on").service_name,
            "edge".to_owned()
        );
    } else {
        let err = parse_text(&text).expect_err("refused");
        assert!(
            matches!(
                err,
                ConfigError::NeedsFeature {
                    section: "[telemetry.otlp]",
                    ..
                }
            ),
            "{err}"
        );
    }
    // An empty `[telemetry]` is fine in any build; unknown keys never are.
    assert!(ok(&with_tables("[telemetry]")).telemetry.otlp.is_none());
    parse_error(&with_tables("[telemetry]\nzipkin = true"), &["zipkin"]);
    parse_error(
        &with_tables("[telemetry.otlp]\ncompression = \"gzip\""),
        &["compression"],
    );
    parse_error(
        &with_tables("[telemetry.otlp]\nheaders = { a = 1 }"),
        &["headers"],
    );
}

#[test]
fn bad_keys_are_refused_with_the_key() {
    let t = |s: &str| format!("[otlp]\n{s}");
    bad_key(
        &t("protocol = \"http/json\""),
        &[],
        "telemetry.otlp.protocol",
        &["http/json"],
    );
    for (url, problem) in [
        ("not a url", "not a URL"),
        ("ftp://collector:21", "http:// or https://"),
        ("/v1/traces", "http:// or https://"),
        ("http://user:pw@collector:4318", "user info"),
        ("http://collector:4318/?key=1", "query"),
    ] {
        bad_key(
            &t(&format!("endpoint = \"{url}\"")),
            &[],
            "telemetry.otlp.endpoint",
            &[problem],
        );
    }
    bad_key(
        &t("protocol = \"grpc\"\nendpoint = \"http://collector:4317/v1/traces\""),
        &[],
        "telemetry.otlp.endpoint",
        &["path"],
    );
    for r in ["-0.1", "1.5", "nan"] {
        bad_key(
            &t(&format!("sample_ratio = {r}")),
            &[],
            "telemetry.otlp.sample_ratio",
            &["between 0.0 and 1.0"],
        );
    }
    bad_key(
        &t("service_name = \"\""),
        &[],
        "telemetry.otlp.service_name",
        &["1 to 255"],
    );
    bad_key(
        &t(&format!("service_name = \"{}\"", "x".repeat(256))),
        &[],
        "telemetry.otlp.service_name",
        &["1 to 255"],
    );
    bad_key(
        &t("timeout = \"0s\""),
        &[],
        "telemetry.otlp.timeout",
        &["longer than zero"],
    );
    bad_key(
        &t("timeout = \"2m\""),
        &[],
        "telemetry.otlp.timeout",
        &["longer than 60s"],
    );
    bad_key(
        &t("headers = { \"bad name\" = \"v\" }"),
        &[],
        "telemetry.otlp.headers.\"bad name\"",
        &["not a valid header name"],
    );
    bad_key(
        &t("headers = { x-key = \"\" }"),
        &[],
        "telemetry.otlp.headers.\"x-key\"",
        &["empty or not printable"],
    );
    bad_key(
        &t("headers = { x-key = \"line\\nbreak\" }"),
        &[],
        "telemetry.otlp.headers.\"x-key\"",
        &["empty or not printable"],
    );
    bad_key(
        &t("headers = { Content-Type = \"text/plain\" }"),
        &[],
        "telemetry.otlp.headers.\"Content-Type\"",
        &["set by the exporter"],
    );
    bad_key(
        &t("headers = { grpc-timeout = \"1S\" }"),
        &[],
        "telemetry.otlp.headers.\"grpc-timeout\"",
        &["set by the exporter"],
    );
    bad_key(
        &t("headers = { X-Key = \"a\", x-key = \"b\" }"),
        &[],
        "telemetry.otlp.headers.\"x-key\"",
        &["same header"],
    );
}

#[test]
fn bad_variables_are_refused_with_the_variable() {
    let v = |name: &str, value: &str, problem: &[&str]| {
        let name = name.to_owned();
        bad_var(ON, &[(&name, value)], &name, problem)
    };
    v(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "collector:4318",
        &["http:// or https://"],
    );
    v(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://a b",
        &["not a URL"],
    );
    v("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", &["http/json"]);
    v("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift", &["thrift"]);
    v("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", &["milliseconds"]);
    v(
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "0",
        &["longer than zero"],
    );
    v("OTEL_EXPORTER_OTLP_TIMEOUT", "120000", &["longer than 60s"]);
    v("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", &["not supported"]);
    v(
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "zstd",
        &["not supported"],
    );
    v("OTEL_SERVICE_NAME", "a\u{7}b", &["control"]);
    v(
        "OTEL_TRACES_SAMPLER",
        "jaeger_remote",
        &["not a supported sampler"],
    );
    v("OTEL_TRACES_SAMPLER_ARG", "half", &["between 0.0 and 1.0"]);
    v("OTEL_TRACES_SAMPLER_ARG", "1.01", &["between 0.0 and 1.0"]);
    v("OTEL_SDK_DISABLED", "yes", &["neither true nor false"]);
    v("OTEL_TRACES_EXPORTER", "zipkin", &["only otlp and none"]);
    v("OTEL_EXPORTER_OTLP_HEADERS", "api-key", &["without `=`"]);
    v("OTEL_EXPORTER_OTLP_HEADERS", "api-key=%zz", &["%-escape"]);
    v(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "bad name=1",
        &["not a valid header name"],
    );
    v(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "host=x",
        &["set by the exporter"],
    );
    let shown = v(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "api-key=s3cret%0A",
        &["not printable"],
    );
    assert!(
        !shown.contains("s3cret"),
        "a secret is never quoted: {shown}"
    );
    // An endpoint variable alone turns export on, so its value is checked too.
    bad_var(
        "",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "udp://collector")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &["http:// or https://"],
    );
    bad_var(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317/path"),
        ],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &["path"],
    );
}
