//! The shipped example config must always match the schema, so it never drifts from the code.

#[test]
fn shipped_example_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mcp-edge.toml");
    let text = std::fs::read_to_string(&path).expect("config/mcp-edge.toml exists");
    // `parse` validates every value but reads no certificate files, which live on servers.
    let cfg = mcp_edge::config::parse(&text, &path, std::path::Path::new("/etc/mcp-edge"))
        .unwrap_or_else(|e| panic!("config/mcp-edge.toml is invalid: {e}"));
    assert!(!cfg.routes.is_empty());
    assert!(
        cfg.routes
            .iter()
            .any(|r| r.transport == mcp_edge::config::Transport::Sse),
        "the example shows a legacy SSE route"
    );
}
