//! `[certs]`: rescans, expiry thresholds and where alerts go.

use http::Uri;

use super::{Resolve, nonzero};
use crate::config::{CertsSettings, ConfigError, WebhookSettings};

/// Checks `[certs]` and resolves the webhook CA path.
pub(super) fn certs(
    c: crate::config::file::CertsFile,
    resolve: Resolve<'_>,
) -> Result<CertsSettings, ConfigError> {
    nonzero("certs.rescan_interval", c.rescan_interval)?;
    nonzero("certs.alert_interval", c.alert_interval)?;
    if c.critical_before > c.warn_before {
        return Err(ConfigError::invalid(
            "certs.critical_before",
            "is longer than certs.warn_before",
            "the critical threshold must come after the warning, e.g. warn_before = \"30d\", critical_before = \"7d\"",
        ));
    }
    let webhook = match c.webhook {
        None => None,
        Some(w) => {
            let url: Uri = w
                .url
                .parse()
                .ok()
                .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "certs.webhook.url",
                        format!("`{}` is not an https:// URL", w.url),
                        "alerts carry certificate details: send them over https, e.g. \"https://alerts.example.com/hooks/mcp-edge\"",
                    )
                })?;
            nonzero("certs.webhook.timeout", w.timeout)?;
            Some(WebhookSettings {
                url,
                ca: w.ca.as_deref().map(resolve),
                timeout: w.timeout,
            })
        }
    };
    if c.command.first().is_some_and(|p| p.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "certs.command",
            "the program name is empty",
            "write the program and its arguments, e.g. [\"/usr/local/bin/page-oncall\", \"mcp-edge\"]",
        ));
    }
    Ok(CertsSettings {
        watch: c.watch,
        rescan_interval: c.rescan_interval,
        warn_before: c.warn_before,
        critical_before: c.critical_before,
        alert_interval: c.alert_interval,
        webhook,
        command: c.command,
    })
}
