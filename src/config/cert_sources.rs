//! The certificate files a configuration puts in use, for the expiry inventory.

use std::path::Path;
use std::time::Duration;

use super::Config;
use crate::certs::inventory::{CertFile, CertKind, CertSources};

impl CertSources for Config {
    fn thresholds(&self) -> (Duration, Duration) {
        (self.certs.warn_before, self.certs.critical_before)
    }

    fn cert_files(&self) -> Vec<CertFile<'_>> {
        let cfg = self;
        let mut out = Files(Vec::new());
        let tls = &cfg.listener.tls;
        out.chain("listener.tls.cert".into(), &tls.cert, CertKind::ServerLeaf);
        for (i, sni) in tls.sni.iter().enumerate() {
            out.chain(
                format!("listener.tls.sni[{i}].cert"),
                &sni.cert,
                CertKind::ServerLeaf,
            );
        }
        if let Some(ca) = &tls.client_auth.ca {
            out.bundle("listener.tls.client_ca".into(), ca, CertKind::ClientCa);
        }
        for (i, crl) in tls.client_auth.crls.iter().enumerate() {
            out.crls(format!("listener.tls.client_crls[{i}]"), crl);
        }
        for (i, issuer) in cfg.auth.issuers.iter().enumerate() {
            if let Some(crate::auth::jwks::KeySource::JwksUrl(u)) = &issuer.keys
                && let Some(ca) = &u.ca
            {
                out.bundle(format!("auth.issuers[{i}].jwks_ca"), ca, CertKind::IssuerCa);
            }
            if let Some(ca) = issuer.introspection.as_ref().and_then(|x| x.ca.as_ref()) {
                out.bundle(
                    format!("auth.issuers[{i}].introspection.ca"),
                    ca,
                    CertKind::IssuerCa,
                );
            }
        }
        for (i, route) in cfg.routes.iter().enumerate() {
            let Some(up) = &route.upstream.tls else {
                continue;
            };
            out.bundle(
                format!("routes[{i}].upstream_tls.ca"),
                &up.ca,
                CertKind::UpstreamCa,
            );
            if let Some(cert) = &up.client_cert {
                out.chain(
                    format!("routes[{i}].upstream_tls.client_cert"),
                    cert,
                    CertKind::UpstreamClient,
                );
            }
        }
        if let Some(ca) = cfg.certs.webhook.as_ref().and_then(|w| w.ca.as_ref()) {
            out.bundle("certs.webhook.ca".into(), ca, CertKind::WebhookCa);
        }
        out.0
    }
}

/// Collects files in order.
struct Files<'a>(Vec<CertFile<'a>>);

impl<'a> Files<'a> {
    fn chain(&mut self, key: String, path: &'a Path, kind: CertKind) {
        self.0.push(CertFile::Chain { key, path, kind });
    }
    fn bundle(&mut self, key: String, path: &'a Path, kind: CertKind) {
        self.0.push(CertFile::Bundle { key, path, kind });
    }
    fn crls(&mut self, key: String, path: &'a Path) {
        self.0.push(CertFile::Crls { key, path });
    }
}
