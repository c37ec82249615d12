//! Legacy HTTP+SSE transport (2024-11-05), all of it: retiring the transport means deleting
//! this file and its arms in [`super::transport`].
//!
//! The backend's first event, `endpoint`, tells the client where to POST its messages. That
//! URI names the backend, so the proxy replaces it with `<public route path>?sessionId=<proxy
//! token>`. The token is sealed by the proxy (see [`crate::session`]): it carries the backend
//! URI and the principal, encrypted, so any instance sharing the session key relays POSTs
//! carrying it, and only for that principal. Whether the session is still alive is the
//! backend's business: it answers 404 for a closed one. [`LegacySessions`] only counts the
//! streams open on this instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use http::Uri;

use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use super::transport::{Target, with_query};
use crate::http::BoxError;
use crate::mcp::Id;
use crate::mcp::pending::{Registration, SharedCalls};
use crate::session::{LegacyClaims, PrincipalHash};
use crate::sse::EventTransform;
use crate::sse::frame::{event_end, event_end_at_eof, lines, split_field};

/// A GET opens a stream on the next endpoint round-robin; a POST goes to the endpoint and
/// message URI its sealed `sessionId` names (unknown when it does not open, is another
/// principal's, has expired, or names an endpoint this route does not have).
pub(crate) fn pick_endpoint(
    gw: &Gateway,
    route: &RouteState,
    method: &http::Method,
    parts: &http::request::Parts,
    binding: &PrincipalHash,
) -> Result<Target, ProxyError> {
    let ups = &route.upstreams;
    if *method == http::Method::GET {
        let endpoint = ups.pick();
        let uri = with_query(&ups.endpoints()[endpoint].uri, parts.uri.query())?;
        return Ok(Target {
            endpoint,
            uri,
            session: None,
        });
    }
    let token = parts
        .uri
        .query()
        .and_then(|q| query_param(q, "sessionId"))
        .ok_or(ProxyError::BadRequest("missing sessionId query parameter"))?;
    let claims = gw
        .sealer
        .open_legacy(token)
        .map_err(|_| ProxyError::UnknownSession)?;
    if !claims.principal.matches(binding) {
        tracing::info!(route = %route.path, "legacy session id presented by another principal");
        return Err(ProxyError::UnknownSession);
    }
    if claims.expired(gw.config.sessions.max_lifetime) {
        tracing::info!(route = %route.path, "legacy session id past sessions.max_lifetime");
        return Err(ProxyError::UnknownSession);
    }
    // The tag must name one of this route's endpoints, so a token from another route (or from
    // before a config change) is unknown here.
    let endpoint = ups
        .by_tag(&claims.endpoint_tag)
        .ok_or(ProxyError::UnknownSession)?;
    let uri: Uri = claims
        .message_uri
        .parse()
        .map_err(|_| ProxyError::UnknownSession)?;
    if uri.authority() != ups.endpoints()[endpoint].uri.authority() {
        return Err(ProxyError::UnknownSession);
    }
    Ok(Target {
        endpoint,
        uri,
        session: None,
    })
}

/// The rewriter of a stream opened by a GET on `route`, sealing announced URIs for `binding`.
pub(crate) fn rewriter(
    gw: &Gateway,
    sessions: Arc<LegacySessions>,
    route: &RouteState,
    target: &Target,
    binding: PrincipalHash,
) -> EndpointRewriter {
    let sealer = gw.sealer.clone();
    let endpoint = &route.upstreams.endpoints()[target.endpoint];
    let tag = endpoint.tag;
    EndpointRewriter::new(
        sessions,
        route.path.clone(),
        target.endpoint,
        endpoint.uri.clone(),
        Box::new(move |uri: &str| {
            sealer
                .seal_legacy(&LegacyClaims::new(tag, uri, binding))
                .ok()
        }),
    )
}

/// Registers the request ids of a POST to a legacy session whose stream is open on this
/// instance, so that stream answers them if it dies first. `None` when there is nothing to
/// pair: not a legacy POST, no request ids, or the stream is elsewhere (another instance).
pub(crate) fn register_calls(
    sessions: &LegacySessions,
    route: &RouteState,
    parts: &http::request::Parts,
    ids: &[Id],
) -> Option<Registration> {
    if route.config.transport != crate::config::Transport::Sse
        || parts.method != http::Method::POST
        || ids.is_empty()
    {
        return None;
    }
    let token = query_param(parts.uri.query()?, "sessionId")?;
    let target = sessions.get(token)?;
    (*target.route == *route.path).then(|| target.calls.register(ids.to_vec()))
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

/// Largest incomplete event the rewriter holds while waiting for its end.
pub const MAX_PENDING_EVENT: usize = 64 * 1024;

/// Where a legacy session's messages go.
#[derive(Debug, Clone)]
pub struct LegacyTarget {
    /// Route the stream was opened on.
    pub route: Arc<str>,
    /// Index of the upstream endpoint that holds the session.
    pub endpoint: usize,
    /// Absolute upstream URI for the POSTs.
    pub uri: Uri,
    /// The session's POSTs waiting for their answer on the stream.
    pub calls: Arc<SharedCalls>,
}

/// Live legacy sessions on this proxy instance, keyed by proxy token.
#[derive(Debug, Default)]
pub struct LegacySessions {
    map: Mutex<HashMap<String, LegacyTarget>>,
}

impl LegacySessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, LegacyTarget>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts
        // and removes), so a poisoned lock is still safe to use.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Target of a live session.
    pub fn get(&self, token: &str) -> Option<LegacyTarget> {
        self.lock().get(token).cloned()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a legacy stream had to be ended.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// An event grew past [`MAX_PENDING_EVENT`] without ending.
    #[error("upstream SSE event exceeds {MAX_PENDING_EVENT} bytes without ending")]
    EventTooLarge,
    /// The `endpoint` event's data is not a URI.
    #[error("upstream `endpoint` event is not a URI: {0:?}")]
    BadEndpoint(String),
}

/// Makes the client-facing `sessionId` for a backend message URI (sealed and bound to the
/// principal, so any instance can route it and no other principal can use it).
pub type SealFn = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Rewrites `endpoint` events of one legacy stream; owns the stream's session token.
pub struct EndpointRewriter {
    sessions: Arc<LegacySessions>,
    seal: SealFn,
    route: Arc<str>,
    endpoint: usize,
    upstream: Uri,
    token: String,
    pending: BytesMut,
    calls: Arc<SharedCalls>,
}

impl EndpointRewriter {
    /// A rewriter for a stream opened on `route` against endpoint `endpoint` at `upstream`;
    /// `seal` turns the announced backend URI into the client's `sessionId`.
    pub fn new(
        sessions: Arc<LegacySessions>,
        route: Arc<str>,
        endpoint: usize,
        upstream: Uri,
        seal: SealFn,
    ) -> Self {
        EndpointRewriter {
            sessions,
            seal,
            route,
            endpoint,
            upstream,
            token: String::new(),
            pending: BytesMut::new(),
            calls: Arc::default(),
        }
    }

    /// POSTs of this stream's session register their pending calls in `calls`.
    pub fn with_calls(mut self, calls: Arc<SharedCalls>) -> Self {
        self.calls = calls;
        self
    }

    /// Takes upstream bytes, returns the complete events among them (rewritten as needed).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, RewriteError> {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            self.rewrite_into(&event, &mut out)?;
        }
        if self.pending.len() > MAX_PENDING_EVENT {
            return Err(RewriteError::EventTooLarge);
        }
        Ok(out.freeze())
    }

    /// Called when the upstream ends: a last event that is complete only now (bare-CR line
    /// ends, where a final CR could not be told from half a CRLF) is rewritten and returned;
    /// an unterminated tail is dropped, as SSE clients discard it anyway, so an unfinished
    /// `endpoint` event can never slip through unrewritten.
    pub fn finish(&mut self) -> Bytes {
        let pending = self.pending.split();
        let mut out = BytesMut::new();
        if event_end_at_eof(&pending) == Some(pending.len())
            && self.rewrite_into(&pending, &mut out).is_err()
        {
            return Bytes::new();
        }
        out.freeze()
    }

    fn rewrite_into(&mut self, event: &[u8], out: &mut BytesMut) -> Result<(), RewriteError> {
        let mut name: &[u8] = b"message";
        let mut data: Vec<&[u8]> = Vec::new();
        let mut id: Option<&[u8]> = None;
        for line in lines(event) {
            let (field, value) = split_field(line);
            match field {
                b"event" => name = value,
                b"data" => data.push(value),
                b"id" => id = Some(value),
                _ => {}
            }
        }
        if name != b"endpoint" {
            out.extend_from_slice(event);
            return Ok(());
        }
        let raw = data.join(&b"\n"[..]);
        let raw = String::from_utf8_lossy(&raw).trim().to_owned();
        let Some(target) = self.resolve(&raw) else {
            return Err(RewriteError::BadEndpoint(raw));
        };
        let Some(token) = (self.seal)(&target.to_string()) else {
            return Err(RewriteError::BadEndpoint(raw));
        };
        let mut live = self.sessions.lock();
        live.remove(&self.token);
        self.token = token;
        live.insert(
            self.token.clone(),
            LegacyTarget {
                route: self.route.clone(),
                endpoint: self.endpoint,
                uri: target,
                calls: self.calls.clone(),
            },
        );
        drop(live);
        out.extend_from_slice(b"event: endpoint\n");
        if let Some(id) = id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(self.route.as_bytes());
        out.extend_from_slice(b"?sessionId=");
        out.extend_from_slice(self.token.as_bytes());
        out.extend_from_slice(b"\n\n");
        Ok(())
    }

    /// Resolves the announced URI against the upstream URL; it must stay on the same origin.
    fn resolve(&self, announced: &str) -> Option<Uri> {
        let base_scheme = self.upstream.scheme_str()?;
        let base_auth = self.upstream.authority()?.as_str();
        let uri: Uri = if announced.starts_with("http://") || announced.starts_with("https://") {
            let u: Uri = announced.parse().ok()?;
            // A backend may not send clients (through us) to some other host.
            if u.scheme_str() != Some(base_scheme) || u.authority()?.as_str() != base_auth {
                return None;
            }
            u
        } else if announced.starts_with("//")
            || announced
                .split('/')
                .next()
                .is_some_and(|first| first.contains(':'))
        {
            // Scheme-relative or another scheme: would leave the backend's origin.
            return None;
        } else if announced.starts_with('/') {
            format!("{base_scheme}://{base_auth}{announced}")
                .parse()
                .ok()?
        } else {
            let dir = self.upstream.path().rsplit_once('/').map_or("", |(d, _)| d);
            format!("{base_scheme}://{base_auth}{dir}/{announced}")
                .parse()
                .ok()?
        };
        Some(uri)
    }
}

impl EventTransform for EndpointRewriter {
    fn feed(&mut self, chunk: Bytes) -> Result<Bytes, BoxError> {
        EndpointRewriter::feed(self, &chunk).map_err(Into::into)
    }
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        Ok(EndpointRewriter::finish(self))
    }
    fn name(&self) -> &'static str {
        "legacy endpoint rewrite"
    }
}

impl Drop for EndpointRewriter {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter(sessions: &Arc<LegacySessions>) -> EndpointRewriter {
        EndpointRewriter::new(
            sessions.clone(),
            Arc::from("/sse"),
            0,
            "http://10.0.0.5:9000/sse".parse().unwrap(),
            Box::new(|_| Some(format!("{:032x}", rand::random::<u128>()))),
        )
    }

    #[test]
    fn endpoint_event_rewritten_and_registered() {
        let sessions = Arc::new(LegacySessions::default());
        let mut r = rewriter(&sessions);
        let out = r
            .feed(b"event: endpoint\ndata: /message?sessionId=abc\n\n")
            .unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with("event: endpoint\ndata: /sse?sessionId="),
            "{text}"
        );
        let token = text.trim().rsplit('=').next().unwrap();
        // The token is random hex, which may itself contain `abc`: look outside it.
        let rest = text.replace(token, "");
        assert!(
            !rest.contains("10.0.0.5") && !rest.contains("abc"),
            "{text}"
        );
        let target = sessions.get(token).unwrap();
        assert_eq!(target.uri, "http://10.0.0.5:9000/message?sessionId=abc");
        drop(r);
        assert!(sessions.is_empty(), "token must die with the stream");
    }

    #[test]
    fn split_events_and_other_events_pass_through() {
        let sessions = Arc::new(LegacySessions::default());
        let mut r = rewriter(&sessions);
        assert!(r.feed(b"event: endp").unwrap().is_empty());
        let out = r.feed(b"oint\r\ndata: http://10.0.0.5:9000/m?x=1\r\n\r\nevent: message\r\ndata: {}\r\n\r\n: c").unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("data: /sse?sessionId="));
        assert!(text.ends_with("event: message\r\ndata: {}\r\n\r\n"));
        assert!(r.finish().is_empty(), "an unterminated tail is dropped");
        // A bare-CR event is complete only at end of stream, and still gets rewritten.
        let out = r.feed(b"event: endpoint\rdata: /m?s=1\r\r").unwrap();
        assert!(out.is_empty());
        let last = r.finish();
        assert!(
            last.starts_with(b"event: endpoint\ndata: /sse?sessionId="),
            "{last:?}"
        );
    }

    #[test]
    fn foreign_or_garbage_endpoints_refused() {
        let sessions = Arc::new(LegacySessions::default());
        let mut r = rewriter(&sessions);
        assert!(
            r.feed(b"event: endpoint\ndata: http://evil.example/m\n\n")
                .is_err()
        );
        assert!(
            r.feed(b"event: endpoint\ndata: //evil.example/m\n\n")
                .is_err()
        );
        assert!(sessions.is_empty());
    }

    #[test]
    fn oversized_event_refused() {
        let sessions = Arc::new(LegacySessions::default());
        let mut r = rewriter(&sessions);
        let big = vec![b'a'; MAX_PENDING_EVENT + 1];
        assert!(matches!(r.feed(&big), Err(RewriteError::EventTooLarge)));
    }

    #[test]
    fn event_end_handles_all_terminators() {
        assert_eq!(event_end(b"a\n\nb"), Some(3));
        assert_eq!(event_end(b"a\r\n\r\nb"), Some(5));
        assert_eq!(event_end(b"a\r\rb"), Some(3));
        assert_eq!(event_end(b"a\r\n\r"), None);
        assert_eq!(event_end(b"a\n"), None);
        assert_eq!(event_end(b"\n"), Some(1));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let terminator = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let line = "[a-z0-9{}\":/?=. ]{0,30}";
        let event = (
            prop_oneof![Just("message"), Just("endpoint"), Just("ping")],
            line,
            terminator,
        )
            .prop_map(|(name, data, t)| {
                let data = if name == "endpoint" {
                    let id: String = data.chars().filter(char::is_ascii_alphanumeric).collect();
                    format!("/message?sessionId={id}")
                } else {
                    data
                };
                format!("event: {name}{t}data: {data}{t}{t}")
            });
        prop::collection::vec(event, 0..8).prop_map(|events| events.concat().into_bytes())
    }

    fn run(input: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
        let sessions = Arc::new(LegacySessions::default());
        let mut r = EndpointRewriter::new(
            sessions,
            Arc::from("/sse"),
            0,
            "http://10.0.0.5:9000/sse".parse().unwrap(),
            Box::new(|_| Some("T".into())),
        );
        let mut out = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.push(input.len());
        for p in points {
            match r.feed(&input[at..p]) {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return (out, false),
            }
            at = p;
        }
        out.extend_from_slice(&r.finish());
        (out, true)
    }

    proptest! {
        #[test]
        fn rewriting_does_not_depend_on_chunking(input in stream(), cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let whole = run(&input, &[]);
            let split = run(&input, &cuts);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn rewritten_stream_never_names_the_backend(input in stream()) {
            let (out, ok) = run(&input, &[]);
            prop_assert!(ok);
            let text = String::from_utf8_lossy(&out);
            prop_assert!(!text.contains("10.0.0.5"));
            prop_assert!(!text.contains("data: /message"));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2048), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
            let _ = run(&input, &cuts);
            let _ = event_end(&input);
        }
    }
}
