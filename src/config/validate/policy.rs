//! `[routes.policy]`: methods, scopes per method and tool, and the rules that grant tools and
//! resources to principals.

use super::is_scope_token;
use crate::config::ConfigError;

/// Checks a route's policy table; `route_key` names keys under the route (`routes[i].…`).
pub(super) fn policy(
    p: crate::config::file::PolicyFile,
    route_key: &dyn Fn(&str) -> String,
) -> Result<crate::policy::RoutePolicy, ConfigError> {
    use crate::policy::{Glob, Matcher, RoutePolicy, Rule, check_prefix_template};
    let key = |k: &str| route_key(&format!("policy.{k}"));
    let glob = |k: String, v: &str| -> Result<Glob, ConfigError> {
        if v.is_empty() || v.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                k,
                format!("`{v}` is not a usable pattern"),
                "write a name, or a pattern where `*` stands for any run of characters",
            ));
        }
        Ok(Glob::new(v))
    };
    let scopes = |k: String, v: &[String]| -> Result<Vec<String>, ConfigError> {
        for (j, s) in v.iter().enumerate() {
            if !is_scope_token(s) {
                return Err(ConfigError::invalid(
                    format!("{k}[{j}]"),
                    format!("`{s}` is not a scope token"),
                    "use one scope per list entry, without spaces or quotes",
                ));
            }
        }
        Ok(v.to_vec())
    };
    let methods = match p.methods {
        None => Vec::new(),
        Some(m) if m.is_empty() => {
            return Err(ConfigError::invalid(
                key("methods"),
                "is empty, which would refuse every message",
                "list the allowed methods (e.g. [\"initialize\", \"notifications/*\", \"tools/*\"]) or remove the key to allow all",
            ));
        }
        Some(m) => m
            .iter()
            .enumerate()
            .map(|(j, v)| glob(key(&format!("methods[{j}]")), v))
            .collect::<Result<_, _>>()?,
    };
    let mut method_scopes = Vec::new();
    for (m, s) in &p.method_scopes {
        let k = key(&format!("method_scopes.\"{m}\""));
        method_scopes.push((glob(k.clone(), m)?, scopes(k, s)?));
    }
    let mut tool_scopes = Vec::new();
    for (t, s) in &p.tool_scopes {
        let k = key(&format!("tool_scopes.\"{t}\""));
        tool_scopes.push((glob(k.clone(), t)?, scopes(k, s)?));
    }
    let mut rules = Vec::with_capacity(p.rules.len());
    for (i, r) in p.rules.into_iter().enumerate() {
        let rk = |k: &str| key(&format!("rules[{i}].{k}"));
        let opt = |k: &str, v: Option<String>| -> Result<Option<Glob>, ConfigError> {
            v.map(|v| glob(rk(&format!("match.{k}")), &v)).transpose()
        };
        let m = r.when;
        let mut claims = Vec::new();
        for (name, values) in m.claims {
            let values = match values {
                crate::config::file::OneOrMany::One(v) => vec![v],
                crate::config::file::OneOrMany::Many(v) => v,
            };
            let ck = rk(&format!("match.claims.{name}"));
            if name.is_empty() || values.is_empty() {
                return Err(ConfigError::invalid(
                    ck,
                    "needs a claim name and at least one value",
                    "write e.g. claims = { org_id = \"acme\" }",
                ));
            }
            let globs = values
                .iter()
                .map(|v| glob(ck.clone(), v))
                .collect::<Result<_, _>>()?;
            claims.push((name, globs));
        }
        let cert_sha256 = match m.cert_sha256 {
            None => None,
            Some(f) => {
                let hex: String = f
                    .chars()
                    .filter(|c| *c != ':')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigError::invalid(
                        rk("match.cert_sha256"),
                        format!("`{f}` is not a SHA-256 fingerprint"),
                        "write 64 hex digits (colons allowed), e.g. from `openssl x509 -noout -fingerprint -sha256`",
                    ));
                }
                Some(hex)
            }
        };
        let when = Matcher {
            issuer: opt("issuer", m.issuer)?,
            subject: opt("subject", m.subject)?,
            client_id: opt("client_id", m.client_id)?,
            organisation: opt("organisation", m.organisation)?,
            scopes: scopes(rk("match.scopes"), &m.scopes)?,
            claims,
            cert_uri: opt("cert_uri", m.cert_uri)?,
            cert_dns: opt("cert_dns", m.cert_dns)?,
            cert_subject: opt("cert_subject", m.cert_subject)?,
            cert_sha256,
        };
        let globs = |k: &str, v: &[String]| -> Result<Vec<Glob>, ConfigError> {
            v.iter()
                .enumerate()
                .map(|(j, t)| glob(rk(&format!("{k}[{j}]")), t))
                .collect()
        };
        for (j, t) in r.resource_prefixes.iter().enumerate() {
            check_prefix_template(t).map_err(|problem| {
                ConfigError::invalid(
                    rk(&format!("resource_prefixes[{j}]")),
                    problem,
                    "write a URI prefix ending in `/` or `:`, e.g. \"memory://{org}/\"",
                )
            })?;
        }
        if r.allow_tools.is_empty() && r.deny_tools.is_empty() && r.resource_prefixes.is_empty() {
            return Err(ConfigError::invalid(
                rk("allow_tools"),
                "the rule grants and denies nothing",
                "add allow_tools, deny_tools or resource_prefixes, or remove the rule",
            ));
        }
        rules.push(Rule {
            name: r.name.unwrap_or_else(|| format!("rules[{i}]")),
            when,
            allow_tools: globs("allow_tools", &r.allow_tools)?,
            deny_tools: globs("deny_tools", &r.deny_tools)?,
            resource_prefixes: r.resource_prefixes,
        });
    }
    Ok(RoutePolicy {
        methods,
        method_scopes,
        tool_scopes,
        rules,
    })
}
