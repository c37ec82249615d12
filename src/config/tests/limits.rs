//! `[limits]` and `[routes.limits]`: defaults, resolution per route, every error.

use super::*;
use crate::limits::{OnStoreFailure, Rate, Store};

#[test]
fn no_limits_unless_configured() {
    let c = ok(MINIMAL);
    assert_eq!(c.limits.store, Store::Local);
    assert_eq!(c.limits.on_store_failure, OnStoreFailure::Local);
    assert!(c.routes[0].limits.is_empty());
}

#[test]
fn route_limits_replace_the_defaults_key_by_key() {
    let c = ok(&format!(
        "{MINIMAL}\nlimits = {{ requests_per_second = 20, tools = {{ search = {{ requests_per_second = 0.5 }} }} }}\n\
         [[routes]]\npath = \"/other\"\nupstream = \"http://127.0.0.1:9001/mcp\"\n\
         [routes.limits]\nmax_open_streams = 2\n\
         [limits]\nrequests_per_second = 5\nburst = 10\nmax_concurrent_requests = 8\n\
         [limits.tools]\n\"db_*\" = {{ requests_per_second = 1, burst = 3 }}\nsearch = {{ requests_per_second = 2 }}\n"
    ));
    let first = &c.routes[0].limits;
    assert_eq!(
        first.requests,
        Some(Rate {
            per_second: 20.0,
            burst: 20
        }),
        "a route rate brings its own burst (one second's worth by default)"
    );
    assert_eq!(first.max_concurrent_requests, Some(8), "default kept");
    let names: Vec<_> = first.tools.iter().map(|t| t.pattern.as_str()).collect();
    assert_eq!(names, ["search", "db_*"], "exact names before patterns");
    assert_eq!(
        first.tools[0].rate.per_second, 0.5,
        "the route's entry wins"
    );
    assert_eq!(first.tools[0].rate.burst, 1);
    let second = &c.routes[1].limits;
    assert_eq!(
        second.requests,
        Some(Rate {
            per_second: 5.0,
            burst: 10
        })
    );
    assert_eq!(second.max_open_streams, Some(2));
    assert_eq!(second.tools[0].rate.per_second, 2.0, "the default entry");
}

#[test]
fn redis_store_defaults() {
    let c = ok(&with_tables(
        "[limits]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/2\"\non_store_failure = \"closed\"",
    ));
    let Store::Redis(r) = &c.limits.store else {
        panic!("redis store expected");
    };
    assert_eq!(r.timeout, Duration::from_millis(5));
    assert_eq!(r.connect_timeout, Duration::from_millis(250));
    assert_eq!(r.pool_size, 2);
    assert_eq!(r.key_prefix, "mcp-edge:");
    assert_eq!(r.probe_interval, Duration::from_secs(1));
    assert_eq!(c.limits.on_store_failure, OnStoreFailure::Closed);
}

#[test]
fn bad_limits_are_refused_with_the_key() {
    let t = |s: &str| with_tables(&format!("[limits]\n{s}"));
    invalid(&t("store = \"redis\""), "limits.redis_url", &["missing"]);
    invalid(
        &t("redis_url = \"redis://127.0.0.1\""),
        "limits.redis_url",
        &["store is \"local\""],
    );
    invalid(
        &t("store = \"redis\"\nredis_url = \"http://127.0.0.1:6379\""),
        "limits.redis_url",
        &["redis://"],
    );
    invalid(
        &t("store = \"redis\"\nredis_url = \"redis://h\"\nredis_timeout = \"2s\""),
        "limits.redis_timeout",
        &["longer than 1s"],
    );
    invalid(
        &t("store = \"redis\"\nredis_url = \"redis://h\"\nredis_timeout = \"0s\""),
        "limits.redis_timeout",
        &["longer than zero"],
    );
    invalid(
        &t("store = \"redis\"\nredis_url = \"redis://h\"\nredis_pool_size = 0"),
        "limits.redis_pool_size",
        &["outside"],
    );
    invalid(
        &t("store = \"redis\"\nredis_url = \"redis://h\"\nredis_key_prefix = \"a b\""),
        "limits.redis_key_prefix",
        &["spaces"],
    );
    invalid(&t("redis_pool_size = 4"), "limits.store", &["redis_*"]);
    invalid(
        &t("max_tracked_keys = 0"),
        "limits.max_tracked_keys",
        &["at least 1"],
    );
    invalid(
        &t("requests_per_second = 0"),
        "limits.requests_per_second",
        &["above 0"],
    );
    invalid(
        &t("requests_per_second = -1"),
        "limits.requests_per_second",
        &["above 0"],
    );
    invalid(
        &t("requests_per_second = nan"),
        "limits.requests_per_second",
        &["above 0"],
    );
    invalid(
        &t("burst = 5"),
        "limits.burst",
        &["without requests_per_second"],
    );
    invalid(
        &t("requests_per_second = 1\nburst = 0"),
        "limits.burst",
        &["at least 1"],
    );
    invalid(
        &t("max_concurrent_requests = 0"),
        "limits.max_concurrent_requests",
        &["at least 1"],
    );
    invalid(
        &t("max_open_streams = 0"),
        "limits.max_open_streams",
        &["at least 1"],
    );
    invalid(
        &t("[limits.tools]\nsearch = { requests_per_second = 0 }"),
        "limits.tools.\"search\".requests_per_second",
        &["above 0"],
    );
    parse_error(&t("store = \"memcached\""), &["memcached"]);
    parse_error(&t("on_store_failure = \"maybe\""), &["maybe"]);
    parse_error(&t("rate = 5"), &["rate"]);

    let r = |s: &str| format!("{MINIMAL}\n[routes.limits]\n{s}");
    invalid(
        &r("max_open_streams = 0"),
        "routes[0].limits.max_open_streams",
        &["at least 1"],
    );
    invalid(
        &r("burst = 2"),
        "routes[0].limits.burst",
        &["without requests_per_second"],
    );
    invalid(
        &r("[routes.limits.tools]\n\"\" = { requests_per_second = 1 }"),
        "routes[0].limits.tools.\"\"",
        &["tool name"],
    );
    invalid(
        &r("[routes.limits.tools]\nx = { requests_per_second = 1, burst = 0 }"),
        "routes[0].limits.tools.\"x\".burst",
        &["at least 1"],
    );
    parse_error(&r("[routes.limits.tools]\nx = { rps = 1 }"), &["rps"]);
}
