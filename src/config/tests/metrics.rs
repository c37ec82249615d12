//! `[metrics]`: defaults and every refusal.

use super::*;

#[test]
fn metrics_are_on_by_default_with_no_extra_labels() {
    let c = ok(MINIMAL);
    assert_eq!(c.metrics, crate::config::MetricsSettings::default());
    assert!(c.metrics.enabled);
}

#[test]
fn metrics_settings_are_read() {
    let c = ok(&with_tables(
        "[metrics]\nenabled = false\ntool_labels = [\"search\"]\norganisation_label = true\norganisations = [\"acme\", \"globex\"]\n",
    ));
    assert!(!c.metrics.enabled);
    assert_eq!(c.metrics.tool_labels, ["search"]);
    assert_eq!(c.metrics.organisations, ["acme", "globex"]);
}

#[test]
fn unbounded_or_unusable_labels_are_refused() {
    invalid(
        &with_tables("[metrics]\norganisation_label = true\n"),
        "metrics.organisations",
        &["empty"],
    );
    invalid(
        &with_tables("[metrics]\norganisations = [\"acme\"]\n"),
        "metrics.organisations",
        &["organisation_label = false"],
    );
    let many: Vec<String> = (0..101).map(|i| format!("\"org{i}\"")).collect();
    invalid(
        &with_tables(&format!(
            "[metrics]\norganisation_label = true\norganisations = [{}]\n",
            many.join(",")
        )),
        "metrics.organisations",
        &["101"],
    );
    invalid(
        &with_tables("[metrics]\ntool_labels = [\"\"]\n"),
        "metrics.tool_labels",
        &["not a usable label value"],
    );
    invalid(
        &with_tables("[metrics]\ntool_labels = [\"a\\nb\"]\n"),
        "metrics.tool_labels",
        &["not a usable label value"],
    );
    invalid(
        &with_tables("[metrics]\ntool_labels = [\"other\"]\n"),
        "metrics.tool_labels",
        &["reserved"],
    );
    parse_error(&with_tables("[metrics]\nbind = \"x\"\n"), &["bind"]);
}
