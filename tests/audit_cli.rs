//! What `mcp-edge audit verify FILE [--hmac-key FILE]` checks, exercised through the library
//! (`mcp_edge::audit::verify_file`) on files written by the real `AuditLog` writer: an intact
//! file verifies; editing, deleting, swapping, inserting or truncating lines is reported at the
//! first bad line; a restarted writer continues the chain.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use mcp_edge::audit::{
    AuditEntry, AuditError, AuditLog, AuditOptions, Decision, FsyncPolicy, GENESIS, Problem,
    VerifyReport, args_digest, verify_file,
};

/// Exit statuses the CLI maps a verification to.
const EXIT_OK: i32 = 0;
const EXIT_TAMPERED: i32 = 1;
const EXIT_USAGE: i32 = 64;

/// Exit status of the real `mcp-edge audit verify FILE [--hmac-key KEYFILE]`.
fn exit_status(path: &Path, key: Option<&[u8]>) -> i32 {
    use base64::Engine as _;
    let mut cmd = support::cli::command();
    cmd.args(["audit", "verify"]).arg(path);
    let key_dir = tempfile::tempdir().expect("tempdir");
    if let Some(key) = key {
        let key_file = key_dir.path().join("audit.key");
        std::fs::write(
            &key_file,
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .expect("write key");
        cmd.arg("--hmac-key").arg(&key_file);
    }
    let out = cmd.output().expect("binary runs");
    let code = out.status.code().expect("exit code");
    // The CLI must agree with the library on every file.
    let expected = match verify_file(path, key) {
        Ok(r) if r.is_ok() => EXIT_OK,
        Ok(_) => EXIT_TAMPERED,
        Err(_) => EXIT_USAGE,
    };
    assert_eq!(
        code,
        expected,
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    code
}

fn entry(i: u64) -> AuditEntry {
    let even = i.is_multiple_of(2);
    AuditEntry {
        time: UNIX_EPOCH + Duration::from_secs(1_790_000_000 + i),
        request_id: format!("req-{i}"),
        principal: format!("spiffe://partner.example/agent-{i}"),
        organisation: Some("partner".into()),
        route: "memory".into(),
        method: "tools/call".into(),
        target: Some(format!("tool-{i}")),
        decision: if even {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reason: if even {
            "allowed by rule partner-tools".into()
        } else {
            "tool not allowed for principal".into()
        },
        upstream_status: even.then_some(200),
        duration_ms: 3 * i,
        args_sha256: Some(args_digest(format!(r#"{{"n":{i}}}"#).as_bytes())),
    }
}

fn options(key: Option<&[u8]>) -> AuditOptions {
    AuditOptions {
        hmac_key: key.map(<[u8]>::to_vec),
        // Tests do not need durability; the writer's behaviour is otherwise identical.
        fsync: FsyncPolicy::Never,
        ..AuditOptions::default()
    }
}

async fn write_entries(path: &Path, key: Option<&[u8]>, range: std::ops::Range<u64>) {
    let log = AuditLog::open(path, options(key)).expect("open audit log");
    for i in range {
        log.record(entry(i)).await;
    }
    log.close().await.expect("close audit log");
}

/// A fresh five-line log.
async fn five_lines(key: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    write_entries(&path, key, 0..5).await;
    (dir, path)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

fn failure(report: &VerifyReport) -> (u64, Problem) {
    let f = report
        .failure
        .clone()
        .unwrap_or_else(|| panic!("tampering not detected: {report}"));
    (f.line, f.problem)
}

#[tokio::test]
async fn intact_log_verifies() {
    let (_dir, path) = five_lines(None).await;
    let report = verify_file(&path, None).expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lines, 5);
    assert_eq!(report.last_seq, Some(5));
    assert_ne!(report.head, GENESIS);
    assert!(report.to_string().starts_with("OK: 5 lines"), "{report}");
    assert_eq!(exit_status(&path, None), EXIT_OK);

    // The lines are what the issue asks for, and arguments only appear hashed.
    let first: serde_json::Value = serde_json::from_str(&read_lines(&path)[0]).expect("json");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["prev"], GENESIS);
    assert_eq!(first["time"], "2026-09-21T14:13:20.000Z");
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["target"], "tool-0");
    assert_eq!(first["args_sha256"].as_str().map(str::len), Some(64));
    assert!(!read_lines(&path)[0].contains(r#"{"n":0}"#));
}

#[tokio::test]
async fn edited_middle_line_is_detected_at_that_line() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    assert!(lines[2].contains(r#""decision":"allow""#));
    lines[2] = lines[2].replace(r#""decision":"allow""#, r#""decision":"deny""#);
    write_lines(&path, &lines);
    let report = verify_file(&path, None).expect("verify");
    assert_eq!(failure(&report), (3, Problem::BadHash));
    assert_eq!(report.lines, 2, "two good lines before the edit");
    assert!(
        report.to_string().starts_with("TAMPERED: line 3"),
        "{report}"
    );
    assert_eq!(exit_status(&path, None), EXIT_TAMPERED);
}

#[tokio::test]
async fn edited_last_line_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines[4] = lines[4].replace("agent-4", "agent-X");
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (5, Problem::BadHash)
    );
}

#[tokio::test]
async fn whitespace_only_edit_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines[1] = lines[1].replacen(",", ", ", 1);
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (2, Problem::BadHash)
    );
}

#[tokio::test]
async fn deleted_line_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines.remove(2);
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (
            3,
            Problem::SeqGap {
                expected: 3,
                found: 4
            }
        )
    );
}

#[tokio::test]
async fn deleted_first_line_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines.remove(0);
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (
            1,
            Problem::SeqGap {
                expected: 1,
                found: 2
            }
        )
    );
}

#[tokio::test]
async fn swapped_lines_are_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines.swap(1, 2);
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (
            2,
            Problem::SeqGap {
                expected: 2,
                found: 3
            }
        )
    );
}

#[tokio::test]
async fn inserted_copy_of_a_line_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    let copy = lines[1].clone();
    lines.insert(2, copy);
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (
            3,
            Problem::SeqGap {
                expected: 3,
                found: 2
            }
        )
    );
}

#[tokio::test]
async fn renumbered_and_rehashed_line_breaks_the_chain() {
    // A line lifted from another log, given the right seq and a valid own hash, still fails:
    // its `prev` does not name the line before it.
    let (_dir, path) = five_lines(None).await;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = other_dir.path().join("other.jsonl");
    write_entries(&other, None, 10..16).await;
    let foreign = read_lines(&other).remove(5);
    let mut lines = read_lines(&path);
    lines.push(foreign);
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (6, Problem::BrokenChain)
    );
}

#[tokio::test]
async fn truncated_last_line_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let bytes = std::fs::read(&path).expect("read");
    let last_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("newline")
        + 1;
    let cut = last_start + (bytes.len() - last_start) / 2;
    std::fs::write(&path, &bytes[..cut]).expect("write");
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (5, Problem::Incomplete)
    );
    // Only the newline missing is still an incomplete write.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
    assert_eq!(
        failure(&verify_file(&path, None).expect("verify")),
        (5, Problem::Incomplete)
    );
}

#[tokio::test]
async fn garbage_line_is_detected() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines[3] = "not json at all".into();
    write_lines(&path, &lines);
    let (line, problem) = failure(&verify_file(&path, None).expect("verify"));
    assert_eq!(line, 4);
    assert!(matches!(problem, Problem::BadJson(_)), "{problem:?}");
}

#[tokio::test]
async fn restarted_writer_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    write_entries(&path, None, 0..3).await;
    write_entries(&path, None, 3..5).await;
    write_entries(&path, None, 5..6).await;
    let report = verify_file(&path, None).expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lines, 6);
    assert_eq!(report.last_seq, Some(6));
    let seqs: Vec<u64> = read_lines(&path)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn restart_after_tampered_tail_is_refused() {
    let (_dir, path) = five_lines(None).await;
    let mut lines = read_lines(&path);
    lines[4] = lines[4].replace("tool-4", "tool-9");
    write_lines(&path, &lines);
    match AuditLog::open(&path, options(None)) {
        Err(AuditError::Resume {
            problem: Problem::BadHash,
            ..
        }) => {}
        other => panic!("resumed a tampered chain: {other:?}"),
    }
}

#[tokio::test]
async fn keyed_log_detects_a_full_rewrite() {
    let key = [0x5au8; 32];
    let (_dir, path) = five_lines(Some(&key)).await;
    let report = verify_file(&path, Some(&key)).expect("verify");
    assert!(report.is_ok() && report.macs_checked, "{report}");

    // The attacker knows the format but not the key: rewriting a line and redoing the chain
    // with unkeyed hashes (or any made-up mac) fails at the first rewritten line.
    let mut lines = read_lines(&path);
    lines[2] = lines[2].replace("tool-2", "tool-0");
    write_lines(&path, &lines);
    assert_eq!(
        failure(&verify_file(&path, Some(&key)).expect("verify")),
        (3, Problem::BadMac)
    );
    assert_eq!(exit_status(&path, Some(&key)), EXIT_TAMPERED);
    assert_eq!(exit_status(&path, Some(&[0x11u8; 32])), EXIT_TAMPERED);
}

#[tokio::test]
async fn keyed_log_restart_continues_the_chain() {
    let key = b"a key that is long enough to use".to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    write_entries(&path, Some(&key), 0..2).await;
    write_entries(&path, Some(&key), 2..4).await;
    let report = verify_file(&path, Some(&key)).expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.last_seq, Some(4));
}

#[test]
fn empty_file_verifies_and_missing_file_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").expect("write");
    let report = verify_file(&empty, None).expect("verify");
    assert!(report.is_ok());
    assert_eq!((report.lines, report.last_seq), (0, None));
    assert_eq!(report.head, GENESIS);

    let missing = dir.path().join("missing.jsonl");
    assert!(matches!(
        verify_file(&missing, None),
        Err(AuditError::Io { .. })
    ));
    assert_eq!(exit_status(&missing, None), EXIT_USAGE);
}
