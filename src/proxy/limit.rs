//! Phase `limits`: the caller's request rate, requests in flight, open streams and per-tool
//! rates on the route (`crate::limits`). Runs after `authorize`, so refused and unauthorised
//! calls spend no tokens, and before `forward`, so a limited request never reaches the
//! backend. A refusal is audited at once; the slots a request holds are given back when its
//! answer ends.

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::RouteState;
use crate::audit::{AuditLog, Decision};
use crate::limits::{Ask, Limits, Permits, client_address_key};
use crate::mcp::Envelope;

/// The MCP method whose `params.name` per-tool limits count.
const TOOLS_CALL: &str = "tools/call";

/// Admits the request under the route's limits, or refuses it with 429 (503 when the shared
/// store is down and limits fail closed).
pub(crate) async fn limit(
    limits: &Limits,
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
    envelope: Option<&Envelope>,
    audit: Option<&AuditLog>,
) -> Result<Permits, ProxyError> {
    if limits.route(&route.path).is_none() {
        return Ok(Permits::default());
    }
    let messages = envelope.map(Envelope::messages).unwrap_or_default();
    // The tool named in the body: the header alone could name another.
    let tools: Vec<&str> = messages
        .iter()
        .filter(|m| m.is_request() && m.method.as_deref() == Some(TOOLS_CALL))
        .filter_map(|m| m.tool_name.as_deref())
        .collect();
    let address;
    let key = if ctx.identity.claims().is_none() && ctx.identity.cert.is_none() {
        address = client_address_key(ctx.conn.peer.ip()).to_string();
        address.as_str()
    } else {
        ctx.identity.label()
    };
    let ask = Ask {
        route: &route.path,
        key,
        tools: &tools,
        stream: ctx.method == http::Method::GET,
    };
    let refusal = match limits.admit(ask).await {
        Ok(permits) => return Ok(permits),
        Err(refusal) => refusal,
    };
    tracing::info!(
        route = %route.path,
        principal = %key,
        limit = refusal.kind.as_str(),
        tool = refusal.tool.as_deref().unwrap_or("-"),
        retry_after_s = refusal.retry_after_secs(),
        "refused by a limit"
    );
    // The calls `authorize` let through are refused after all: audit them as such now.
    let reason = format!("limit: {refusal}");
    for mut entry in std::mem::take(&mut ctx.audit) {
        entry.decision = Decision::Deny;
        entry.reason.clone_from(&reason);
        if let Some(audit) = audit {
            audit.try_record(entry);
        }
    }
    // Answer the call that hit the limit: the tool's call for a tool rate, else the first.
    let id = messages
        .iter()
        .filter(|m| m.is_request())
        .find(|m| refusal.tool.is_none() || m.tool_name == refusal.tool)
        .and_then(|m| m.id.clone());
    Err(ProxyError::Limited { id, refusal })
}
