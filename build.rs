//! Records the commit the binary is built from, for `mcp_edge_build_info` and `--version`
//! readers: `MCP_EDGE_COMMIT` from the environment when set (container builds without `.git`),
//! else what git says, else nothing (the metric then says `unknown`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MCP_EDGE_COMMIT");
    if std::env::var_os("MCP_EDGE_COMMIT").is_some() {
        return;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=MCP_EDGE_COMMIT={commit}");
    // Rebuild when HEAD moves: a commit changes the branch's ref, a checkout HEAD itself.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let (Some(head_ref), Some(common)) = (
            git(&["symbolic-ref", "-q", "HEAD"]),
            git(&["rev-parse", "--git-common-dir"]),
        ) {
            println!("cargo:rerun-if-changed={common}/{head_ref}");
            println!("cargo:rerun-if-changed={common}/packed-refs");
        }
    }
}
