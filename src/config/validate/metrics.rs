//! Checks `[metrics]`: labels stay few and printable.

use super::ConfigError;
use crate::config::MetricsSettings;
use crate::config::file::MetricsFile;

/// Most tool names `metrics.tool_labels` may list.
pub const MAX_TOOL_LABELS: usize = 200;
/// Most organisations `metrics.organisations` may list.
pub const MAX_ORGANISATIONS: usize = 100;
/// Longest label value accepted from the config.
const MAX_LABEL_LEN: usize = 128;

/// Resolves `[metrics]`.
pub(super) fn metrics(m: MetricsFile) -> Result<MetricsSettings, ConfigError> {
    check_list("metrics.tool_labels", &m.tool_labels, MAX_TOOL_LABELS)?;
    check_list("metrics.organisations", &m.organisations, MAX_ORGANISATIONS)?;
    if m.organisation_label && m.organisations.is_empty() {
        return Err(ConfigError::invalid(
            "metrics.organisations",
            "is empty while metrics.organisation_label = true",
            "list the organisations to label by name (at most 100; others are labelled \"other\"), or set organisation_label = false",
        ));
    }
    if !m.organisation_label && !m.organisations.is_empty() {
        return Err(ConfigError::invalid(
            "metrics.organisations",
            "is set while metrics.organisation_label = false",
            "set organisation_label = true to label requests by organisation, or remove the list",
        ));
    }
    Ok(MetricsSettings {
        enabled: m.enabled,
        tool_labels: m.tool_labels,
        organisation_label: m.organisation_label,
        organisations: m.organisations,
    })
}

fn check_list(key: &str, values: &[String], max: usize) -> Result<(), ConfigError> {
    if values.len() > max {
        return Err(ConfigError::invalid(
            key,
            format!("lists {} values", values.len()),
            format!("list at most {max}: every value is a set of series in every scrape"),
        ));
    }
    for v in values {
        if v.is_empty() || v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                key,
                format!("{v:?} is not a usable label value"),
                format!("use non-empty names of at most {MAX_LABEL_LEN} printable characters"),
            ));
        }
        if matches!(v.as_str(), "other" | "none") {
            return Err(ConfigError::invalid(
                key,
                format!("{v:?} is reserved"),
                "\"other\" and \"none\" label what is not listed; remove it",
            ));
        }
    }
    Ok(())
}
