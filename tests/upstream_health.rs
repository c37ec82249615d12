//! Upstream health over real sockets: retries on connect failures and ejection move traffic off
//! a dead endpoint; an endpoint answering 5xx, hanging or answering garbage opens its circuit
//! (fast 503 with Retry-After) which closes again once it recovers; active health checks take
//! an endpoint out before a client request fails; sessions pinned to an ejected endpoint get
//! 404; a POST that reached its backend is never sent twice.

mod support;

use std::time::Duration;

use mcp_edge::upstream::{CircuitState, EndpointSnapshot};
use support::flaky::{Flaky, Mode};
use support::{Pki, TestProxy, listener_toml, raw, start_proxy};

/// A `tools/call` with `id` (2025-03-26 era: no protocol header needed).
fn tool_call(id: u64) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "hi"}}
    })
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    id: u64,
    session: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&tool_call(id));
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req.send().await.expect("request reaches the proxy")
}

/// The health snapshot of the endpoint at `url`.
fn health(proxy: &TestProxy, url: &str) -> EndpointSnapshot {
    let running = proxy.running.as_ref().expect("proxy running");
    running
        .proxy
        .upstream_health()
        .into_iter()
        .find(|e| e.uri == url)
        .unwrap_or_else(|| panic!("no health entry for {url}"))
}

/// Polls `cond` every 50 ms for up to 10 s; panics with `what` if it never holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn routes(upstreams: &[&str], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "{extra}\n[[routes]]\npath = \"/mcp\"\nupstreams = [{}]\n",
        list.join(", ")
    )
}

async fn error_body(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is JSON: {text}"))
}

#[tokio::test]
async fn dead_endpoint_costs_no_sessionless_call_and_is_skipped_once_ejected() {
    let dead = raw::dead_address().await;
    let live = Flaky::start("live").await;
    let dead_url = format!("http://{dead}/mcp");
    let proxy = start_proxy(&routes(
        &[&dead_url, &live.url()],
        "[upstream.circuit]\nfailures = 2\nopen_for = \"30s\"\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    for id in 0..10 {
        let resp = post(&client, &url, id, None).await;
        assert_eq!(resp.status(), 200, "call {id} must not fail");
    }
    assert_eq!(
        live.tool_calls(),
        10,
        "every call answered by the live endpoint"
    );
    let h = health(&proxy, &dead_url);
    assert_eq!(h.circuit, CircuitState::Open, "{h:?}");
    assert!(h.ejected && h.ejections == 1, "{h:?}");
    let retries = h.retries;
    assert!(retries >= 1, "connect failures were retried: {h:?}");
    for id in 10..20 {
        assert_eq!(post(&client, &url, id, None).await.status(), 200);
    }
    assert_eq!(
        health(&proxy, &dead_url).retries,
        retries,
        "the ejected endpoint is no longer tried"
    );
    assert_eq!(live.tool_calls(), 20);
}

#[tokio::test]
async fn repeated_5xx_open_the_circuit_then_a_probe_closes_it() {
    let backend = Flaky::start("b").await;
    backend.set_mode(Mode::Status(500));
    let proxy = start_proxy(&routes(
        &[&backend.url()],
        "[upstream.circuit]\nfailures = 3\nopen_for = \"2s\"\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    for id in 0..3 {
        assert_eq!(post(&client, &url, id, None).await.status(), 500);
    }
    assert_eq!(backend.calls(), 3);
    let resp = post(&client, &url, 42, None).await;
    assert_eq!(resp.status(), 503, "open circuit answers at once");
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body = error_body(resp).await;
    assert_eq!(body["id"], 42, "the error answers the call: {body}");
    assert_eq!(body["error"]["code"], -32000, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no backend address: {body}"
    );
    for id in 43..46 {
        assert_eq!(post(&client, &url, id, None).await.status(), 503);
    }
    assert_eq!(backend.calls(), 3, "the backend sees nothing while open");

    backend.set_mode(Mode::Ok);
    let mut answered = None;
    for id in 100..200 {
        let status = post(&client, &url, id, None).await.status();
        if status == 200 {
            answered = Some(id);
            break;
        }
        assert_eq!(status, 503, "only fast refusals until the probe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered.is_some(), "the half-open probe never went through");
    assert_eq!(backend.calls(), 4, "exactly one probe reached the backend");
    assert_eq!(health(&proxy, &backend.url()).circuit, CircuitState::Closed);
    assert_eq!(post(&client, &url, 300, None).await.status(), 200);
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_504s_then_opens_the_circuit() {
    let hole = raw::black_hole().await;
    let hole_url = format!("http://{}/mcp", hole.addr);
    let proxy = start_proxy(&routes(
        &[&hole_url],
        "[upstream]\nresponse_header_timeout = \"300ms\"\n[upstream.circuit]\nfailures = 2\nopen_for = \"30s\"\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    for id in 0..2 {
        let resp = post(&client, &url, id, None).await;
        assert_eq!(resp.status(), 504);
        let body = error_body(resp).await;
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let h = health(&proxy, &hole_url);
    assert_eq!(h.circuit, CircuitState::Open, "timeouts count: {h:?}");
    assert_eq!(post(&client, &url, 9, None).await.status(), 503);
}

#[tokio::test]
async fn a_backend_answering_garbage_gets_a_clean_502_and_counts() {
    let backend = Flaky::start("g").await;
    backend.set_mode(Mode::Garbage);
    let proxy = start_proxy(&routes(
        &[&backend.url()],
        "[upstream.circuit]\nfailures = 2\nopen_for = \"30s\"\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    let resp = post(&client, &url, 1, None).await;
    assert_eq!(resp.status(), 502);
    let body = error_body(resp).await;
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(health(&proxy, &backend.url()).consecutive_failures, 1);
    assert_eq!(post(&client, &url, 2, None).await.status(), 502);
    assert_eq!(post(&client, &url, 3, None).await.status(), 503);
    assert_eq!(backend.calls(), 2, "nothing sent while open");
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_before_any_call_fails_and_back() {
    let a = Flaky::start("a").await;
    let b = Flaky::start("b").await;
    let proxy = start_proxy(&routes(
        &[&a.url(), &b.url()],
        "[upstream.health_check]\nenabled = true\npath = \"/healthz\"\ninterval = \"100ms\"\n\
         timeout = \"100ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    a.set_healthy(false);
    wait_until("the check marks a unhealthy", || {
        !health(&proxy, &a.url()).healthy
    })
    .await;
    for id in 0..10 {
        assert_eq!(post(&client, &url, id, None).await.status(), 200);
    }
    assert_eq!(a.calls(), 0, "no call went to the unhealthy endpoint");
    assert_eq!(b.calls(), 10);

    // With no healthy endpoint left the route fails fast.
    b.set_healthy(false);
    wait_until("the check marks b unhealthy", || {
        !health(&proxy, &b.url()).healthy
    })
    .await;
    let resp = post(&client, &url, 99, None).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(
        a.calls() + b.calls(),
        10,
        "nothing sent to unhealthy endpoints"
    );
    b.set_healthy(true);
    wait_until("the check marks b healthy again", || {
        health(&proxy, &b.url()).healthy
    })
    .await;

    a.set_healthy(true);
    wait_until("the check marks a healthy again", || {
        health(&proxy, &a.url()).healthy
    })
    .await;
    for id in 10..20 {
        assert_eq!(post(&client, &url, id, None).await.status(), 200);
    }
    assert!(a.calls() > 0, "a is back in rotation");
    assert_eq!(a.calls() + b.calls(), 20);
}

#[tokio::test]
async fn a_session_pinned_to_an_ejected_endpoint_is_unknown() {
    let a = Flaky::start("a").await;
    let b = Flaky::start("b").await;
    let proxy = start_proxy(&routes(
        &[&a.url(), &b.url()],
        "[upstream.circuit]\nfailures = 2\nopen_for = \"30s\"\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    // One session from each endpoint.
    let (mut on_a, mut on_b) = (None, None);
    for id in 0..6 {
        let before = a.calls();
        let resp = post(&client, &url, id, None).await;
        assert_eq!(resp.status(), 200);
        let sealed = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        if a.calls() > before {
            on_a.get_or_insert(sealed);
        } else {
            on_b.get_or_insert(sealed);
        }
    }
    let (on_a, on_b) = (on_a.expect("a session on a"), on_b.expect("a session on b"));
    assert_eq!(post(&client, &url, 10, Some(&on_a)).await.status(), 200);

    a.stop();
    // Let the proxy see its pooled connections to a close (a POST written on one would not
    // be retried, rightly).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Sessionless calls are retried on b while a's connect failures open its circuit.
    for id in 20..40 {
        if health(&proxy, &a.url()).ejected {
            break;
        }
        assert_eq!(post(&client, &url, id, None).await.status(), 200);
    }
    assert!(health(&proxy, &a.url()).ejected, "a is ejected");
    let resp = post(&client, &url, 40, Some(&on_a)).await;
    assert_eq!(
        resp.status(),
        404,
        "the client is told to start a new session"
    );
    assert_eq!(post(&client, &url, 41, Some(&on_b)).await.status(), 200);
}

#[tokio::test]
async fn a_post_that_reached_a_backend_is_never_retried() {
    let a = Flaky::start("a").await;
    let b = Flaky::start("b").await;
    a.set_mode(Mode::ResetAfterRead);
    let proxy = start_proxy(&routes(
        &[&a.url(), &b.url()],
        "[upstream.circuit]\nfailures = 100\n",
    ))
    .await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    let mut failed_on_a = 0;
    for id in 0..6 {
        let before = (a.tool_calls(), b.tool_calls());
        let status = post(&client, &url, id, None).await.status();
        let after = (a.tool_calls(), b.tool_calls());
        let reached = (after.0 - before.0) + (after.1 - before.1);
        assert_eq!(reached, 1, "call {id} ran exactly once");
        if after.0 > before.0 {
            assert_eq!(status, 502, "the reset is reported, not retried");
            failed_on_a += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    assert!(failed_on_a > 0, "round-robin sent some calls to a");
    assert_eq!(health(&proxy, &a.url()).retries, 0);
}

/// A proxy started from a config file in the PKI directory, so it can be reloaded.
async fn start_reloadable(pki: Pki, rest: &str) -> (TestProxy, std::path::PathBuf) {
    let path = pki.dir.path().join("mcp-edge.toml");
    std::fs::write(&path, format!("{}{rest}", listener_toml(&pki))).unwrap();
    let cfg = mcp_edge::config::load(&path).expect("config loads");
    let running = mcp_edge::app::start(cfg).await.expect("proxy starts");
    let proxy = TestProxy {
        addr: running.addr,
        pki,
        running: Some(running),
    };
    (proxy, path)
}

async fn reload(proxy: &TestProxy, path: &std::path::Path, rest: &str) {
    std::fs::write(path, format!("{}{rest}", listener_toml(&proxy.pki))).unwrap();
    let running = proxy.running.as_ref().expect("running");
    running
        .reloader
        .reload_config()
        .await
        .expect("reload accepted");
}

#[tokio::test]
async fn health_survives_reloads_and_leaves_with_its_endpoint() {
    let a = Flaky::start("a").await;
    let b = Flaky::start("b").await;
    a.set_mode(Mode::Status(503));
    let tables = "[upstream.circuit]\nfailures = 2\nopen_for = \"30s\"\n\
                  [upstream.health_check]\nenabled = true\npath = \"/healthz\"\n\
                  interval = \"50ms\"\ntimeout = \"50ms\"\n";
    let (proxy, path) = start_reloadable(Pki::new(), &routes(&[&a.url()], tables)).await;
    let client = proxy.client(false);
    let url = proxy.url("/mcp");
    for id in 0..2 {
        assert_eq!(post(&client, &url, id, None).await.status(), 503);
    }
    assert_eq!(health(&proxy, &a.url()).circuit, CircuitState::Open);

    // Another route and a changed timeout: the gateway is rebuilt, a's circuit stays open.
    let more = format!(
        "{}[[routes]]\npath = \"/other\"\nupstream = \"{}\"\n",
        routes(
            &[&a.url()],
            &format!("{tables}[upstream]\nconnect_timeout = \"2s\"\n")
        ),
        b.url()
    );
    reload(&proxy, &path, &more).await;
    let h = health(&proxy, &a.url());
    assert_eq!((h.circuit, h.ejections), (CircuitState::Open, 1), "{h:?}");
    let calls = a.calls();
    let resp = post(&client, &url, 5, None).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(a.calls(), calls, "still open after the reload");

    // a leaves the config: its entry goes, and so does its health check.
    reload(&proxy, &path, &routes(&[&b.url()], tables)).await;
    let running = proxy.running.as_ref().unwrap();
    assert!(
        running
            .proxy
            .upstream_health()
            .iter()
            .all(|e| e.uri != a.url()),
        "a is no longer listed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probes = a.probes();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.probes(), probes, "a is no longer probed");
    assert!(b.probes() > 0, "b is");
    assert_eq!(post(&client, &url, 6, None).await.status(), 200);
}
