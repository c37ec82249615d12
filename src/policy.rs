//! MCP-aware authorization: which JSON-RPC methods, tools and resources a proven principal may
//! use on a route.
//!
//! A route's `[routes.policy]` has three parts:
//! - `methods`: an allowlist of method patterns for everything a client sends (requests and
//!   notifications); answers to server requests carry no method and always pass.
//! - `method_scopes` / `tool_scopes`: token scopes a call needs on top of the route's
//!   `auth.scopes`; a shortfall is a 403 `insufficient_scope` naming every scope needed, so a
//!   client can step up.
//! - `rules`: who may call which tool and read which resources. Every rule whose `match`
//!   holds for the principal applies; their grants add up, and a tool any of them denies is
//!   denied. Once a route has rules, the default is closed: a principal no rule matches may
//!   call no tool and read no resource, and sees an empty `tools/list`.
//!
//! Patterns are globs where `*` stands for any run of characters (`search_*`, `*`,
//! `spiffe://acme.example/*`). Resource prefixes may use `{org}` and `{sub}`, filled from the
//! principal, so one rule can give every organisation its own namespace.

pub use crate::glob::Glob;
use crate::mcp::Message;

/// Methods whose `params.uri` is checked against the principal's resource prefixes.
const RESOURCE_METHODS: [&str; 3] = [
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// The 2026-07-28 long-lived POST whose `params.notifications.resourceSubscriptions` name
/// resources to follow.
const LISTEN_METHOD: &str = "subscriptions/listen";

/// Conditions on a principal; all that are set must hold. An empty matcher matches everyone
/// who reached the policy (that is, everyone the route's `auth.require` let in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    /// Token `iss`.
    pub issuer: Option<Glob>,
    /// Token `sub`.
    pub subject: Option<Glob>,
    /// Token `client_id` (or `azp`).
    pub client_id: Option<Glob>,
    /// The organisation (from `auth.organisation_claim`).
    pub organisation: Option<Glob>,
    /// Scopes the token must all carry.
    pub scopes: Vec<String>,
    /// Token claims: each named claim must have a value (or, for arrays, an element) matching
    /// one of the globs.
    pub claims: Vec<(String, Vec<Glob>)>,
    /// One of the client certificate's URI SANs (e.g. a SPIFFE id).
    pub cert_uri: Option<Glob>,
    /// One of the client certificate's DNS SANs.
    pub cert_dns: Option<Glob>,
    /// The client certificate's subject DN as displayed (RFC 4514 style).
    pub cert_subject: Option<Glob>,
    /// The client certificate's SHA-256 fingerprint, lower-case hex without separators.
    pub cert_sha256: Option<String>,
}

/// One `[[routes.policy.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name used in audit reasons and logs.
    pub name: String,
    /// Who the rule is for.
    pub when: Matcher,
    /// Tools the rule grants.
    pub allow_tools: Vec<Glob>,
    /// Tools the rule takes away, whatever another rule grants.
    pub deny_tools: Vec<Glob>,
    /// URI prefixes of readable resources; may contain `{org}` and `{sub}`.
    pub resource_prefixes: Vec<String>,
}

/// The MCP policy of one route. The default (no `[routes.policy]`) allows everything the
/// route's authentication admits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Allowed methods; empty means every method.
    pub methods: Vec<Glob>,
    /// Extra scopes per method pattern.
    pub method_scopes: Vec<(Glob, Vec<String>)>,
    /// Extra scopes per tool pattern (for `tools/call`).
    pub tool_scopes: Vec<(Glob, Vec<String>)>,
    /// Tool and resource grants.
    pub rules: Vec<Rule>,
}

/// Who is calling, as the policy sees it (defined with the identity it is a view of).
pub use crate::auth::identity::Principal;

impl Matcher {
    /// Whether `p` satisfies every condition set.
    pub fn matches(&self, p: &Principal<'_>) -> bool {
        let claim = |g: &Option<Glob>, v: Option<&str>| match g {
            None => true,
            Some(g) => v.is_some_and(|v| g.matches(v)),
        };
        let c = p.claims;
        if !claim(&self.issuer, c.map(|c| c.issuer.as_str()))
            || !claim(&self.subject, c.and_then(|c| c.subject.as_deref()))
            || !claim(&self.client_id, c.and_then(|c| c.client_id.as_deref()))
            || !claim(&self.organisation, p.organisation)
        {
            return false;
        }
        if !self.scopes.is_empty()
            && !p
                .scopes()
                .is_some_and(|have| self.scopes.iter().all(|s| have.contains(s)))
        {
            return false;
        }
        for (name, globs) in &self.claims {
            let Some(value) = c.and_then(|c| c.raw.get(name)) else {
                return false;
            };
            if !claim_matches(value, globs) {
                return false;
            }
        }
        let cert = p.cert;
        let any = |g: &Option<Glob>, vs: Option<&Vec<String>>| match g {
            None => true,
            Some(g) => vs.is_some_and(|vs| vs.iter().any(|v| g.matches(v))),
        };
        any(&self.cert_uri, cert.map(|c| &c.uris))
            && any(&self.cert_dns, cert.map(|c| &c.dns))
            && claim(&self.cert_subject, cert.map(|c| c.subject.as_str()))
            && self
                .cert_sha256
                .as_ref()
                .is_none_or(|want| cert.is_some_and(|c| c.sha256_hex == *want))
    }
}

/// Strings compare as they are; numbers and booleans by their JSON text; arrays match when
/// any element does. Objects and null never match.
fn claim_matches(value: &serde_json::Value, globs: &[Glob]) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => globs.iter().any(|g| g.matches(s)),
        Value::Number(_) | Value::Bool(_) => {
            let text = value.to_string();
            globs.iter().any(|g| g.matches(&text))
        }
        Value::Array(items) => items
            .iter()
            .any(|v| !v.is_array() && claim_matches(v, globs)),
        Value::Object(_) | Value::Null => false,
    }
}

/// What the rules give one principal on one route, worked out once per request.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    restricted: bool,
    rules: Vec<String>,
    allow: Vec<Glob>,
    deny: Vec<Glob>,
    prefixes: Vec<String>,
}

impl Grants {
    /// Whether rules limit this principal at all (false when the route has none).
    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// Names of the rules that matched, for audit reasons.
    pub fn rule_names(&self) -> &[String] {
        &self.rules
    }

    /// Whether `tools/call` of `tool` is granted (and `tool` stays in `tools/list`).
    pub fn tool_allowed(&self, tool: &str) -> bool {
        !self.restricted
            || (self.allow.iter().any(|g| g.matches(tool))
                && !self.deny.iter().any(|g| g.matches(tool)))
    }

    /// Whether the resource at `uri` is inside one of the granted namespaces.
    pub fn resource_allowed(&self, uri: &str) -> Result<(), &'static str> {
        if !self.restricted {
            return Ok(());
        }
        if ambiguous_uri(uri) {
            return Err("the resource URI has dot segments or encoded separators");
        }
        if self.prefixes.iter().any(|p| uri.starts_with(p.as_str())) {
            Ok(())
        } else {
            Err("the resource is outside the namespaces granted to this principal")
        }
    }

    /// The audit reason of a message these grants let through.
    pub fn reason(&self, allowed: Allowed) -> String {
        match allowed {
            Allowed::AnswerToServer => "answer to a server request".to_owned(),
            Allowed::ByRules if !self.restricted => "no rules on route".to_owned(),
            Allowed::ByRules => format!("rules: {}", self.rules.join(", ")),
        }
    }
}

impl crate::mcp::filter::Visibility for Grants {
    fn tool(&self, name: &str) -> bool {
        self.tool_allowed(name)
    }
    fn resource(&self, uri: &str) -> bool {
        self.resource_allowed(uri).is_ok()
    }
}

/// Why a message may pass; its text ([`Grants::reason`]) is made only for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// An answer to a request the server sent (no method to check).
    AnswerToServer,
    /// The route's methods, scopes and the principal's rules allow it.
    ByRules,
}

/// The outcome of checking one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; the reason goes to the audit log.
    Allow(Allowed),
    /// Refuse it (403 with a JSON-RPC error); the reason goes to the client and the audit log.
    Deny(String),
    /// Refuse it with a 403 `insufficient_scope` challenge listing every scope it needs.
    InsufficientScope(Vec<String>),
}

impl RoutePolicy {
    /// Whether the policy can refuse or filter anything (routes without one skip the work).
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
            && self.method_scopes.is_empty()
            && self.tool_scopes.is_empty()
            && self.rules.is_empty()
    }

    /// The grants of every rule that matches `p`.
    pub fn grants(&self, p: &Principal<'_>) -> Grants {
        let mut g = Grants {
            restricted: !self.rules.is_empty(),
            ..Grants::default()
        };
        for rule in self.rules.iter().filter(|r| r.when.matches(p)) {
            g.rules.push(rule.name.clone());
            g.allow.extend(rule.allow_tools.iter().cloned());
            g.deny.extend(rule.deny_tools.iter().cloned());
            g.prefixes.extend(
                rule.resource_prefixes
                    .iter()
                    .filter_map(|t| render_prefix(t, p)),
            );
        }
        g
    }

    /// Checks one message of a POST body. `route_scopes` are the route's `auth.scopes`, which
    /// a scope challenge must repeat.
    pub fn check(
        &self,
        grants: &Grants,
        p: &Principal<'_>,
        route_scopes: &[String],
        msg: &Message,
    ) -> Verdict {
        let Some(method) = msg.method.as_deref() else {
            return Verdict::Allow(Allowed::AnswerToServer);
        };
        if !self.methods.is_empty() && !self.methods.iter().any(|g| g.matches(method)) {
            return Verdict::Deny(format!("method `{method}` is not allowed on this route"));
        }

        let mut needed: Vec<&str> = Vec::new();
        for (g, scopes) in &self.method_scopes {
            if g.matches(method) {
                needed.extend(scopes.iter().map(String::as_str));
            }
        }
        let tool = (method == "tools/call")
            .then_some(msg.tool_name.as_deref())
            .flatten();
        if let Some(tool) = tool {
            for (g, scopes) in &self.tool_scopes {
                if g.matches(tool) {
                    needed.extend(scopes.iter().map(String::as_str));
                }
            }
        }
        if !needed.is_empty() {
            let have = p.scopes();
            if !needed
                .iter()
                .all(|s| have.is_some_and(|have| have.contains(*s)))
            {
                let mut all: Vec<String> = route_scopes.to_vec();
                for s in needed {
                    if !all.iter().any(|a| a == s) {
                        all.push(s.to_owned());
                    }
                }
                return Verdict::InsufficientScope(all);
            }
        }

        if method == "tools/call" && grants.is_restricted() {
            let Some(tool) = tool else {
                return Verdict::Deny("tools/call without a tool name".to_owned());
            };
            if !grants.tool_allowed(tool) {
                return Verdict::Deny(format!("tool `{tool}` is not allowed for this principal"));
            }
        }
        if method == LISTEN_METHOD && grants.is_restricted() {
            // Following a resource's updates reads it, as `resources/subscribe` does.
            for uri in &msg.subscriptions {
                if let Err(why) = grants.resource_allowed(uri) {
                    return Verdict::Deny(format!("subscription to {uri:?}: {why}"));
                }
            }
        }
        if RESOURCE_METHODS.contains(&method) && grants.is_restricted() {
            let Some(uri) = msg.resource_uri.as_deref() else {
                return Verdict::Deny(format!("{method} without a resource URI"));
            };
            if let Err(why) = grants.resource_allowed(uri) {
                return Verdict::Deny(why.to_owned());
            }
        }
        Verdict::Allow(Allowed::ByRules)
    }
}

/// Fills `{org}` and `{sub}`; a placeholder the principal cannot fill safely drops the prefix.
fn render_prefix(template: &str, p: &Principal<'_>) -> Option<String> {
    let mut out = template.to_owned();
    for (name, value) in [
        ("{org}", p.organisation),
        ("{sub}", p.claims.and_then(|c| c.subject.as_deref())),
    ] {
        if out.contains(name) {
            // A value that could climb out of its namespace must not be pasted into one.
            let v = value.filter(|v| {
                !v.is_empty()
                    && *v != "."
                    && *v != ".."
                    // `:` and `@` separate URN parts and user info: `urn:x:{org}:` must not
                    // give `acme` the namespace of `acme:evil`.
                    && !v.contains(['/', '\\', '?', '#', '%', '*', ':', '@'])
                    && !v.chars().any(char::is_control)
            })?;
            out = out.replace(name, v);
        }
    }
    Some(out)
}

/// URIs a backend might normalise into another namespace than the one the prefix saw.
fn ambiguous_uri(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") {
        return true;
    }
    if uri.contains('\\') || uri.chars().any(char::is_control) {
        return true;
    }
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    if matches!(scheme.as_deref(), Some("http" | "https")) {
        // Query and fragment are not path: `?a=../b` names no other resource.
        let path = uri.split(['?', '#']).next().unwrap_or(uri);
        return path.split('/').any(|seg| seg == "." || seg == "..");
    }
    // Other schemes have no agreed grammar: a backend may read `?` or `#` as part of the path
    // (`memory://a/?/../../b`), so the whole URI is checked, with `?` and `#` as separators too.
    uri.split(['/', '?', '#'])
        .any(|seg| seg == "." || seg == "..")
}

/// Checks a resource prefix template at config load: placeholders known, boundary explicit.
pub fn check_prefix_template(template: &str) -> Result<(), String> {
    let stripped = template.replace("{org}", "").replace("{sub}", "");
    if stripped.contains(['{', '}']) {
        return Err(format!(
            "`{template}` has an unknown placeholder (only {{org}} and {{sub}} exist)"
        ));
    }
    if template.is_empty() || !(template.ends_with('/') || template.ends_with(':')) {
        return Err(format!(
            "`{template}` must end with `/` or `:` so that `memory://acme` cannot also grant `memory://acme-evil`"
        ));
    }
    if ambiguous_uri(template) {
        return Err(format!(
            "`{template}` has dot segments or encoded separators"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::Claims;
    use crate::auth::mtls::ClientIdentity;
    use crate::mcp::{Id, MessageKind};

    fn claims(iss: &str, sub: &str, scopes: &[&str], raw: serde_json::Value) -> Claims {
        Claims {
            issuer: iss.to_owned(),
            subject: Some(sub.to_owned()),
            audience: vec![],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            client_id: None,
            expires_at: 0,
            key_id: None,
            algorithm: None,
            cnf_x5t_s256: None,
            raw: raw.as_object().cloned().unwrap_or_default(),
            organisation: None,
            backend_subject: Some(sub.to_owned()),
        }
    }

    fn call(tool: &str) -> Message {
        Message {
            kind: MessageKind::Request,
            id: Some(Id::from(1i64)),
            method: Some("tools/call".to_owned()),
            tool_name: Some(tool.to_owned()),
            resource_uri: None,
            subscriptions: Vec::new(),
            traceparent: None,
        }
    }

    fn read(uri: &str) -> Message {
        Message {
            kind: MessageKind::Request,
            id: Some(Id::from(2i64)),
            method: Some("resources/read".to_owned()),
            tool_name: None,
            resource_uri: Some(uri.to_owned()),
            subscriptions: Vec::new(),
            traceparent: None,
        }
    }

    fn globs(v: &[&str]) -> Vec<Glob> {
        v.iter().map(|s| Glob::new(*s)).collect()
    }

    #[test]
    fn glob_matching() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("search_*", "search_docs", true),
            ("search_*", "research_docs", false),
            ("*_admin", "db_admin", true),
            ("*_admin", "db_admin2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            (
                "spiffe://acme.example/*",
                "spiffe://acme.example/ns/x",
                true,
            ),
            (
                "spiffe://acme.example/*",
                "spiffe://acme.example.evil/x",
                false,
            ),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(Glob::new(p).matches(t), want, "{p:?} vs {t:?}");
        }
    }

    fn policy() -> RoutePolicy {
        RoutePolicy {
            methods: globs(&[
                "initialize",
                "ping",
                "notifications/*",
                "tools/*",
                "resources/*",
            ]),
            method_scopes: vec![(Glob::new("resources/*"), vec!["memory:read".into()])],
            tool_scopes: vec![(Glob::new("delete_*"), vec!["memory:write".into()])],
            rules: vec![
                Rule {
                    name: "everyone".into(),
                    when: Matcher::default(),
                    allow_tools: globs(&["search", "get_*", "delete_*"]),
                    deny_tools: vec![],
                    resource_prefixes: vec!["memory://{org}/".into()],
                },
                Rule {
                    name: "no-deletes-for-guests".into(),
                    when: Matcher {
                        claims: vec![("role".into(), globs(&["guest"]))],
                        ..Matcher::default()
                    },
                    allow_tools: vec![],
                    deny_tools: globs(&["delete_*"]),
                    resource_prefixes: vec![],
                },
            ],
        }
    }

    #[test]
    fn tools_and_namespaces_follow_the_rules() {
        let pol = policy();
        let acme = claims(
            "https://idp",
            "alice",
            &["memory:read"],
            serde_json::json!({"role": ["member"]}),
        );
        let p = Principal {
            claims: Some(&acme),
            cert: None,
            organisation: Some("acme"),
        };
        let g = pol.grants(&p);
        assert!(g.is_restricted());
        let check = |m: &Message| pol.check(&g, &p, &["mcp".into()], m);
        assert!(matches!(check(&call("search")), Verdict::Allow(_)));
        assert!(matches!(check(&call("get_note")), Verdict::Allow(_)));
        assert_eq!(
            check(&call("drop_tables")),
            Verdict::Deny("tool `drop_tables` is not allowed for this principal".into())
        );
        assert_eq!(
            check(&call("delete_note")),
            Verdict::InsufficientScope(vec!["mcp".into(), "memory:write".into()])
        );
        assert!(matches!(
            check(&read("memory://acme/notes/1")),
            Verdict::Allow(_)
        ));
        assert!(matches!(
            check(&read("memory://globex/notes/1")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            check(&read("memory://acme-evil/x")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            check(&read("memory://acme/../globex/x")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            check(&read("memory://acme/%2e%2e/globex")),
            Verdict::Deny(_)
        ));
        let other = Message {
            method: Some("prompts/get".into()),
            ..call("x")
        };
        assert!(matches!(check(&other), Verdict::Deny(_)));
        let answer = Message {
            kind: MessageKind::Response,
            method: None,
            ..call("x")
        };
        assert!(matches!(check(&answer), Verdict::Allow(_)));
    }

    #[test]
    fn deny_wins_over_allow_and_guests_lose_deletes() {
        let pol = policy();
        let guest = claims(
            "https://idp",
            "bob",
            &["memory:read", "memory:write"],
            serde_json::json!({"role": "guest"}),
        );
        let p = Principal {
            claims: Some(&guest),
            cert: None,
            organisation: Some("acme"),
        };
        let g = pol.grants(&p);
        assert_eq!(g.rule_names(), ["everyone", "no-deletes-for-guests"]);
        assert!(!g.tool_allowed("delete_note"));
        assert!(g.tool_allowed("search"));
        assert!(matches!(
            pol.check(&g, &p, &[], &call("delete_note")),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn unmatched_principals_get_nothing_and_missing_org_drops_the_namespace() {
        let mut pol = policy();
        pol.rules[0].when.organisation = Some(Glob::new("*"));
        let c = claims(
            "https://idp",
            "carol",
            &["memory:read"],
            serde_json::json!({}),
        );
        let p = Principal {
            claims: Some(&c),
            cert: None,
            organisation: None,
        };
        let g = pol.grants(&p);
        assert!(g.rule_names().is_empty());
        assert!(!g.tool_allowed("search"));
        assert!(matches!(
            pol.check(&g, &p, &[], &read("memory://acme/x")),
            Verdict::Deny(_)
        ));
        // An organisation that would climb out of its namespace fills nothing.
        for bad in ["..", "a/b", "%2e", "*"] {
            let p = Principal {
                organisation: Some(bad),
                ..p
            };
            assert!(render_prefix("memory://{org}/", &p).is_none(), "{bad}");
        }
    }

    #[test]
    fn certificate_matchers() {
        let id = ClientIdentity {
            subject: "CN=agent,O=Acme".into(),
            uris: vec!["spiffe://acme.example/agent".into()],
            dns: vec!["agent.acme.example".into()],
            sha256_hex: "ab".repeat(32),
            sha256: [0xab; 32],
        };
        let p = Principal {
            claims: None,
            cert: Some(&id),
            organisation: None,
        };
        let m = |f: fn(&mut Matcher)| {
            let mut m = Matcher::default();
            f(&mut m);
            m.matches(&p)
        };
        assert!(m(
            |m| m.cert_uri = Some(Glob::new("spiffe://acme.example/*"))
        ));
        assert!(!m(
            |m| m.cert_uri = Some(Glob::new("spiffe://globex.example/*"))
        ));
        assert!(m(|m| m.cert_dns = Some(Glob::new("*.acme.example"))));
        assert!(m(|m| m.cert_subject = Some(Glob::new("*O=Acme"))));
        assert!(m(|m| m.cert_sha256 = Some("ab".repeat(32))));
        assert!(!m(|m| m.cert_sha256 = Some("cd".repeat(32))));
        // Token conditions never hold for a certificate-only principal.
        assert!(!m(|m| m.issuer = Some(Glob::new("*"))));
        assert!(!m(|m| m.scopes = vec!["x".into()]));
        assert_eq!(p.label(), "spiffe://acme.example/agent");
    }

    #[test]
    fn claim_values_of_every_json_type() {
        let g = globs(&["42", "true", "acme"]);
        assert!(claim_matches(&serde_json::json!(42), &g));
        assert!(claim_matches(&serde_json::json!(true), &g));
        assert!(claim_matches(&serde_json::json!(["x", "acme"]), &g));
        assert!(!claim_matches(&serde_json::json!([["acme"]]), &g));
        assert!(!claim_matches(&serde_json::json!({"acme": 1}), &g));
        assert!(!claim_matches(&serde_json::Value::Null, &g));
    }

    #[test]
    fn prefix_templates_are_checked() {
        assert!(check_prefix_template("memory://{org}/").is_ok());
        assert!(check_prefix_template("urn:acme:").is_ok());
        assert!(check_prefix_template("memory://{org}").is_err());
        assert!(check_prefix_template("memory://{tenant}/").is_err());
        assert!(check_prefix_template("memory://a/../").is_err());
        assert!(check_prefix_template("").is_err());
    }

    /// Obviously-correct (exponential) glob matcher to check [`Glob::matches`] against.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_the_reference(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
            proptest::prop_assert_eq!(Glob::new(p.clone()).matches(&t), reference(p.as_bytes(), t.as_bytes()));
        }
    }

    #[test]
    fn no_rules_means_no_restriction() {
        let pol = RoutePolicy {
            methods: globs(&["tools/*"]),
            ..RoutePolicy::default()
        };
        let p = Principal::default();
        let g = pol.grants(&p);
        assert!(!g.is_restricted());
        assert!(matches!(
            pol.check(&g, &p, &[], &call("anything")),
            Verdict::Allow(_)
        ));
        assert!(matches!(
            pol.check(&g, &p, &[], &read("file:///etc/passwd")),
            Verdict::Deny(_)
        ));
    }
}
