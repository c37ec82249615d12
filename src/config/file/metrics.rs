//! `[metrics]`: which request series are recorded and how they are labelled.

use serde::Deserialize;

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// Record request, connection, stream, auth, limit and upstream series (certificate,
    /// reload and audit figures are always served).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tools labelled on every route, beside those the route's policy and limits name.
    #[serde(default)]
    pub tool_labels: Vec<String>,
    /// Add an `organisation` label to `mcp_edge_requests_total`.
    #[serde(default)]
    pub organisation_label: bool,
    /// The organisations labelled by name (others are `other`).
    #[serde(default)]
    pub organisations: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for MetricsFile {
    fn default() -> Self {
        MetricsFile {
            enabled: true,
            tool_labels: Vec::new(),
            organisation_label: false,
            organisations: Vec::new(),
        }
    }
}
