//! Phase `authorize`: the route policy decides every message of a POST (methods, scopes per
//! method and tool, tools and resources per principal). A refusal answers the whole request
//! and is audited at once; allowed calls leave their audit records in the context, completed
//! when the answer ends. The grants also decide how answers are filtered.

use std::sync::Arc;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::auth::AuthError;
use crate::mcp::{self, Envelope};
use crate::policy::{Grants, Verdict};

/// What `authorize` leaves for `respond`.
pub(crate) struct Authorized {
    /// The principal's grants when they restrict what it sees: answers are filtered by them.
    pub(crate) filter: Option<Arc<Grants>>,
    /// Whether the POST asks for a list (its JSON answer is then buffered to filter).
    pub(crate) lists_requested: bool,
    /// The calls forwarded, owed an answer if their stream dies.
    pub(crate) calls: super::respond::Calls,
}

/// Decides every message of `envelope` (none for GET and DELETE).
pub(crate) fn authorize(
    gw: &Gateway,
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
    envelope: Option<&Envelope>,
    digest: Option<[u8; 32]>,
    audit: Option<&AuditLog>,
) -> Result<Authorized, ProxyError> {
    let policy = &route.config.policy;
    let principal = ctx.identity.principal();
    let grants = (!policy.is_empty()).then(|| policy.grants(&principal));
    let messages = envelope.map(Envelope::messages).unwrap_or_default();
    for m in messages {
        let allowed = match &grants {
            None => None,
            Some(grants) => match policy.check(grants, &principal, &route.config.scopes, m) {
                Verdict::Allow(allowed) => Some(allowed),
                Verdict::Deny(reason) => {
                    let error = ProxyError::Policy {
                        id: m.id.clone(),
                        reason: reason.clone(),
                    };
                    return Err(refuse(ctx, route, m, audit, digest, reason, error));
                }
                Verdict::InsufficientScope(needed) => {
                    let reason = format!("insufficient scope: needs {}", needed.join(" "));
                    let error = ProxyError::Auth(
                        AuthError::CallNeedsScopes { needed }
                            .challenged(&gw.config.listener.public_url, &route.config.auth()),
                    );
                    return Err(refuse(ctx, route, m, audit, digest, reason, error));
                }
            },
        };
        // The reason's text is made only when an audit record will carry it.
        if audit.is_some() && m.method.is_some() {
            let reason = match (&grants, allowed) {
                (Some(grants), Some(allowed)) => grants.reason(allowed),
                _ => "no policy on route".to_owned(),
            };
            let record = entry(ctx, route, m, Decision::Allow, reason, digest);
            ctx.audit.push(record);
        }
    }
    let lists_requested = messages.iter().any(|m| {
        m.is_request()
            && m.method
                .as_deref()
                .is_some_and(|name| mcp::filter::LIST_METHODS.contains(&name))
    });
    Ok(Authorized {
        filter: grants.filter(Grants::is_restricted).map(Arc::new),
        lists_requested,
        calls: super::respond::Calls::of(envelope),
    })
}

/// Logs and audits the refusal of `m` (for `reason`), returning its answer.
fn refuse(
    ctx: &RequestCtx<'_>,
    route: &RouteState,
    m: &mcp::Message,
    audit: Option<&AuditLog>,
    digest: Option<[u8; 32]>,
    reason: String,
    error: ProxyError,
) -> ProxyError {
    tracing::info!(route = %route.path, principal = %ctx.identity.label(), method = m.method.as_deref().unwrap_or("-"), %reason, "refused by policy");
    if let Some(audit) = audit {
        audit.try_record(entry(ctx, route, m, Decision::Deny, reason, digest));
    }
    error
}

/// The audit record of one call (upstream status and duration are filled in at the end).
fn entry(
    ctx: &RequestCtx<'_>,
    route: &RouteState,
    m: &mcp::Message,
    decision: Decision,
    reason: String,
    digest: Option<[u8; 32]>,
) -> AuditEntry {
    AuditEntry {
        time: std::time::SystemTime::now(),
        request_id: ctx.request_id().to_owned(),
        principal: ctx.identity.label().to_owned(),
        organisation: ctx.identity.organisation().map(str::to_owned),
        route: route.path.to_string(),
        method: m.method.clone().unwrap_or_default(),
        target: m.tool_name.clone().or_else(|| m.resource_uri.clone()),
        decision,
        reason,
        upstream_status: None,
        duration_ms: 0,
        args_sha256: digest,
    }
}
