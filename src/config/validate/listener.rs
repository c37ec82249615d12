//! `[listener]` and `[listener.tls]`: the public socket, its host names, certificates and
//! client-certificate settings.

use std::net::SocketAddr;

use http::Uri;

use super::{Resolve, has_user_info, is_dns_name, nonzero};
use crate::config::{
    ClientAuth, ClientAuthMode, ConfigError, Listener, ListenerFile, ServerTls, SniCert,
};

/// Checks `[listener]` and resolves its certificate paths.
pub(super) fn listener(l: ListenerFile, resolve: Resolve<'_>) -> Result<Listener, ConfigError> {
    let bind: SocketAddr = l.bind.parse().map_err(|_| {
        ConfigError::invalid(
            "listener.bind",
            format!("`{}` is not a socket address", l.bind),
            "write it as IP:PORT, e.g. \"0.0.0.0:8443\" or \"[::]:8443\"",
        )
    })?;
    let public_url = parse_public_url(&l.public_url)?;
    if l.max_connections == 0 {
        return Err(ConfigError::invalid(
            "listener.max_connections",
            "must be at least 1",
            "set a positive number (default 10000)",
        ));
    }
    let max_connections_per_ip = match l.max_connections_per_ip {
        None => default_per_ip(l.max_connections),
        Some(0) => {
            return Err(ConfigError::invalid(
                "listener.max_connections_per_ip",
                "must be at least 1",
                "set a positive number, or remove the key for the default (a quarter of \
                 max_connections, at most 256); to turn the per-address cap off set it \
                 equal to max_connections",
            ));
        }
        Some(n) if n > l.max_connections => {
            return Err(ConfigError::invalid(
                "listener.max_connections_per_ip",
                format!(
                    "{n} is larger than listener.max_connections ({})",
                    l.max_connections
                ),
                "set it at most equal to max_connections (equal turns the per-address cap off)",
            ));
        }
        Some(n) => n,
    };
    nonzero("listener.handshake_timeout", l.handshake_timeout)?;
    if !(1..=65536).contains(&l.max_handshakes_in_flight) {
        return Err(ConfigError::invalid(
            "listener.max_handshakes_in_flight",
            format!("{} is outside 1..=65536", l.max_handshakes_in_flight),
            "keep the default 256 (about a hundred per core is plenty); connections beyond \
             it wait for a slot",
        ));
    }

    let mut sni = Vec::with_capacity(l.tls.sni.len());
    for (i, s) in l.tls.sni.iter().enumerate() {
        let key = format!("listener.tls.sni[{i}].names");
        if s.names.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "is empty",
                "list the DNS names this certificate serves, e.g. [\"mcp.example.com\"]",
            ));
        }
        let mut names = Vec::with_capacity(s.names.len());
        for n in &s.names {
            let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
            let bare = n.strip_prefix("*.").unwrap_or(&n);
            if !is_dns_name(bare) {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{n}` is not a DNS name"),
                    "use exact names or a leading wildcard such as \"*.example.com\"",
                ));
            }
            names.push(n);
        }
        for n in &names {
            if let Some(prev) = sni.iter().position(|p: &SniCert| p.names.contains(n)) {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{n}` is already listed in listener.tls.sni[{prev}]"),
                    "list each name under one certificate only",
                ));
            }
        }
        sni.push(SniCert {
            names,
            cert: resolve(&s.cert),
            key: resolve(&s.key),
        });
    }
    let allow_tls12 = match l.tls.min_version.as_str() {
        "1.2" => true,
        "1.3" => false,
        other => {
            return Err(ConfigError::invalid(
                "listener.tls.min_version",
                format!("`{other}` is not supported"),
                "use \"1.2\" (default) or \"1.3\"",
            ));
        }
    };
    let allowed_hosts = validate_hosts(&l.allowed_hosts, &public_url)?;
    let client_auth = ClientAuth {
        mode: l.tls.client_auth,
        ca: l.tls.client_ca.as_deref().map(resolve),
        crls: l.tls.client_crls.iter().map(|p| resolve(p)).collect(),
    };
    match (client_auth.mode, &client_auth.ca) {
        (ClientAuthMode::Off, Some(_)) | (ClientAuthMode::Off, None)
            if !client_auth.crls.is_empty() =>
        {
            return Err(ConfigError::invalid(
                "listener.tls.client_crls",
                "is set while client_auth is off",
                "set client_auth = \"optional\" or \"required\", or remove the CRLs",
            ));
        }
        (ClientAuthMode::Optional | ClientAuthMode::Required, None) => {
            return Err(ConfigError::invalid(
                "listener.tls.client_ca",
                "is missing while client_auth is on",
                "set client_ca to the PEM bundle of the CA that issues client certificates",
            ));
        }
        _ => {}
    }
    Ok(Listener {
        bind,
        public_url,
        allowed_hosts,
        max_connections: l.max_connections,
        max_connections_per_ip,
        handshake_timeout: l.handshake_timeout,
        max_handshakes_in_flight: l.max_handshakes_in_flight,
        tls: ServerTls {
            cert: resolve(&l.tls.cert),
            key: resolve(&l.tls.key),
            sni,
            allow_tls12,
            client_auth,
        },
    })
}

fn parse_public_url(s: &str) -> Result<Uri, ConfigError> {
    let bad = |problem: String| {
        ConfigError::invalid(
            "listener.public_url",
            problem,
            "write the URL clients use, scheme and host only, e.g. \"https://mcp.example.com\"",
        )
    };
    let uri: Uri = s.parse().map_err(|_| bad(format!("`{s}` is not a URL")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(format!("`{s}` is not an https:// URL")));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(bad(format!("`{s}` has no host")));
    }
    if has_user_info(&uri) {
        return Err(bad(
            "the URL carries user info (`user:password@`)".to_owned()
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(format!("`{s}` has a path or query")));
    }
    Ok(uri)
}

/// Normalises `listener.allowed_hosts`, defaulting to the host of `public_url`.
fn validate_hosts(hosts: &[String], public_url: &Uri) -> Result<Vec<String>, ConfigError> {
    if hosts.is_empty() {
        return Ok(public_url
            .host()
            .map(|h| vec![h.to_ascii_lowercase()])
            .unwrap_or_default());
    }
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let ipv6 = h.starts_with('[')
                && h.ends_with(']')
                && h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
            if ipv6 || h.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(&h) {
                Ok(h)
            } else {
                Err(ConfigError::invalid(
                    format!("listener.allowed_hosts[{i}]"),
                    format!("`{h}` is not a host name or IP address"),
                    "list bare host names without port, e.g. \"mcp.example.com\" or \"[::1]\"",
                ))
            }
        })
        .collect()
}

/// The per-address cap when none is configured: a quarter of the global cap, so at least
/// four addresses are needed to fill it, but never more than 256 (no single client needs
/// more, and with the default 10000 a quarter would still let 4 hosts lock everyone out).
fn default_per_ip(max_connections: usize) -> usize {
    (max_connections / 4).clamp(1, 256)
}
