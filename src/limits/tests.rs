//! Unit tests of the local limits: buckets, slots, state kept across rebuilds.

use super::*;

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate { per_second, burst }
}

fn limits(route: RouteLimits, previous: Option<&Limits>) -> Limits {
    Limits::rebuild(
        &LimitSettings::default(),
        vec![(Arc::from("/mcp"), route)],
        previous,
    )
    .expect("local limits")
}

fn ask<'a>(key: &'a str, tools: &'a [&'a str], stream: bool) -> Ask<'a> {
    static ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("/mcp"));
    Ask {
        route: &ROUTE,
        key,
        tools,
        stream,
    }
}

#[tokio::test]
async fn a_burst_is_allowed_then_the_caller_waits_while_others_go_on() {
    let l = limits(
        RouteLimits {
            requests: Some(rate(0.5, 3)),
            ..Default::default()
        },
        None,
    );
    for _ in 0..3 {
        l.admit(ask("alice", &[], false))
            .await
            .expect("within the burst");
    }
    let refusal = l
        .admit(ask("alice", &[], false))
        .await
        .expect_err("burst spent");
    assert_eq!(refusal.kind, LimitKind::Rate);
    assert!(
        refusal.retry_after > Duration::from_secs(1)
            && refusal.retry_after <= Duration::from_secs(2),
        "one token comes back every 2s: {:?}",
        refusal.retry_after
    );
    assert_eq!(refusal.retry_after_secs(), 2);
    l.admit(ask("bob", &[], false))
        .await
        .expect("bob has his own bucket");
}

#[tokio::test]
async fn tool_rates_count_only_matching_calls_and_name_the_tool() {
    let l = limits(
        RouteLimits {
            tools: vec![
                ToolRate {
                    pattern: Glob::new("search"),
                    rate: rate(0.1, 1),
                },
                ToolRate {
                    pattern: Glob::new("db_*"),
                    rate: rate(0.1, 2),
                },
            ],
            ..Default::default()
        },
        None,
    );
    l.admit(ask("alice", &["search"], false))
        .await
        .expect("first search");
    let refusal = l
        .admit(ask("alice", &["search"], false))
        .await
        .expect_err("second search");
    assert_eq!(refusal.kind, LimitKind::ToolRate);
    assert_eq!(refusal.tool.as_deref(), Some("search"));
    assert!(refusal.to_string().contains("`search`"), "{refusal}");
    // Other tools, and calls that are not tools/call, are not counted.
    for _ in 0..5 {
        l.admit(ask("alice", &["echo"], false))
            .await
            .expect("echo is unlimited");
        l.admit(ask("alice", &[], false)).await.expect("no tool");
    }
    // Every tool matching one pattern shares its bucket; a batch takes a token per call.
    l.admit(ask("alice", &["db_read", "db_write"], false))
        .await
        .expect("two calls, burst 2");
    let refusal = l
        .admit(ask("alice", &["db_read"], false))
        .await
        .expect_err("bucket spent");
    assert_eq!(refusal.tool.as_deref(), Some("db_read"));
}

#[tokio::test]
async fn slots_are_held_until_the_permits_drop() {
    let l = limits(
        RouteLimits {
            max_concurrent_requests: Some(2),
            max_open_streams: Some(1),
            ..Default::default()
        },
        None,
    );
    let a = l.admit(ask("alice", &[], false)).await.expect("first");
    let stream = l
        .admit(ask("alice", &[], true))
        .await
        .expect("a stream is a request too");
    let refusal = l
        .admit(ask("alice", &[], false))
        .await
        .expect_err("two in flight");
    assert_eq!(refusal.kind, LimitKind::Concurrency);
    drop(a);
    let refusal = l
        .admit(ask("alice", &[], true))
        .await
        .expect_err("one stream open");
    assert_eq!(refusal.kind, LimitKind::Streams);
    let b = l
        .admit(ask("alice", &[], false))
        .await
        .expect("a slot came back");
    drop((b, stream));
    assert_eq!(l.counters.len(), 0, "idle callers leave no entry");
    let _s = l
        .admit(ask("alice", &[], true))
        .await
        .expect("the stream slot came back");
    l.admit(ask("bob", &[], true))
        .await
        .expect("bob has his own slots");
}

#[tokio::test]
async fn rebuilding_keeps_the_state_of_unchanged_limits_only() {
    let route = RouteLimits {
        requests: Some(rate(0.1, 1)),
        max_concurrent_requests: Some(1),
        ..Default::default()
    };
    let first = limits(route.clone(), None);
    let held = first.admit(ask("alice", &[], false)).await.expect("first");
    let same = limits(route.clone(), Some(&first));
    let refusal = same
        .admit(ask("alice", &[], false))
        .await
        .expect_err("still in flight");
    assert_eq!(refusal.kind, LimitKind::Concurrency, "slots carry over");
    drop(held);
    let refusal = same
        .admit(ask("alice", &[], false))
        .await
        .expect_err("token spent");
    assert_eq!(
        refusal.kind,
        LimitKind::Rate,
        "an unchanged bucket carries over"
    );
    let changed = limits(
        RouteLimits {
            requests: Some(rate(0.1, 2)),
            ..route
        },
        Some(&same),
    );
    changed
        .admit(ask("alice", &[], false))
        .await
        .expect("a changed quota starts a new bucket");
}

#[test]
fn anonymous_callers_are_keyed_by_address_and_ipv6_by_64() {
    let key = |s: &str| client_address_key(s.parse().expect("ip")).to_string();
    assert_eq!(key("192.0.2.7"), "192.0.2.7");
    assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
    assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
}

#[test]
fn retry_after_is_whole_seconds_rounded_up() {
    let r = |ms| LimitRefusal {
        kind: LimitKind::Rate,
        retry_after: Duration::from_millis(ms),
        tool: None,
    };
    assert_eq!(r(0).retry_after_secs(), 1);
    assert_eq!(r(1).retry_after_secs(), 1);
    assert_eq!(r(1000).retry_after_secs(), 1);
    assert_eq!(r(1001).retry_after_secs(), 2);
}

#[tokio::test]
async fn tool_buckets_follow_their_pattern_when_a_reload_reorders_them() {
    let tools = |names: [&str; 2]| RouteLimits {
        tools: names
            .iter()
            .map(|n| ToolRate {
                pattern: Glob::new(*n),
                rate: rate(0.1, 1),
            })
            .collect(),
        ..Default::default()
    };
    let first = limits(tools(["search", "export"]), None);
    first
        .admit(ask("alice", &["search"], false))
        .await
        .expect("search");
    let reordered = limits(tools(["export", "search"]), Some(&first));
    let refusal = reordered
        .admit(ask("alice", &["search"], false))
        .await
        .expect_err("search's bucket is still spent");
    assert_eq!(refusal.tool.as_deref(), Some("search"));
    reordered
        .admit(ask("alice", &["export"], false))
        .await
        .expect("export's bucket was never touched");
}
