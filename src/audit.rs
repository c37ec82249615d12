//! Audit log: one JSON line per MCP call, hash-chained so that editing, deleting, reordering or
//! inserting lines is detectable, and [`verify_file`] behind `mcp-edge audit verify`.
//!
//! # Line format
//!
//! Each line is a JSON object, written in this field order (absent optional values are `null`,
//! so every call line has the same keys):
//!
//! ```text
//! {"time":"2026-11-05T10:00:00.123Z","request_id":"…","principal":"…","organisation":null,
//!  "route":"…","method":"tools/call","target":"search","decision":"allow","reason":"…",
//!  "upstream_status":200,"duration_ms":12,"args_sha256":"<64 hex>",
//!  "seq":7,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! Arguments are never logged: `args_sha256` is the SHA-256 of the POST body that carried the
//! call (arguments included), which lets an investigator confirm a known request without the log holding
//! secrets. (Low-entropy arguments can be guessed by hashing candidates; treat the log as
//! sensitive anyway.) Strings longer than [`MAX_FIELD`] bytes are cut and marked.
//!
//! When entries were lost (queue full, or a failed write), the writer records the loss in the
//! chain itself before the next entry:
//! `{"time":…,"event":"audit_dropped","count":N,"seq":…,"prev":…,"hash":…}`. Consumers
//! should expect lines with an `event` key.
//!
//! # Chain
//!
//! - `seq` starts at 1 and grows by one per line; a gap or repeat means a line was deleted,
//!   inserted or moved.
//! - `prev` is the hex SHA-256 of the previous line's exact bytes (without the newline);
//!   64 zeros for the first line of a file ([`GENESIS`]).
//! - The last field is the line's own digest over the line *without* that field (the object
//!   closed right after `prev`): either `"hash"` = SHA-256 (no key configured) or `"mac"` =
//!   HMAC-SHA-256 with the configured key. Verification works on the exact bytes, never on a
//!   re-serialisation, so any edit — even of whitespace — shows up **on the edited line**.
//!
//! Without a key the chain catches accidental damage and naive edits, but anyone who can
//! rewrite the whole file can also recompute every hash. With a key (kept off the log host's
//! writable storage; `mcp-edge audit verify --hmac-key`), a rewritten line cannot be given a
//! valid `mac`. Neither mode can tell that whole lines were cut off the *end* of the file: the
//! [`VerifyReport`] therefore gives the last `seq` and the `head` hash, to compare with an
//! external anchor (a shipped copy, or the head the writer logs when it opens and closes
//! the file).
//!
//! One key mode per file: an existing file is resumed only in the mode it was written in (and
//! with the same key). To start using, or change, a key, start a new file.
//!
//! # Writer
//!
//! A dedicated OS thread owns the file: writes and `fsync` block, and on a 2-core host they must
//! not hold a tokio worker. Requests hand entries over a bounded channel
//! ([`AuditOptions::capacity`]). When the queue is full, [`AuditLog::record`] waits at most
//! [`AuditOptions::block`] (default 100 ms) and then drops the entry, counts it, and the writer
//! later records an `audit_dropped` line: a stalled disk must not stall every MCP call, and a
//! short wait absorbs the bursts that happen while an `fsync` is in flight, so entries are only
//! lost when the disk is genuinely stuck — and the loss itself is in the tamper-evident log.
//! After a drop, `record` does not wait again for a second, so a dead disk costs the request
//! path one short wait, not one per request. (A deployment that must refuse calls it cannot
//! audit would need `record` to report failure; not needed so far.)
//!
//! The writer drains whatever is queued into one `write` (group commit) and, under
//! [`FsyncPolicy::EveryBatch`] (the default), calls `fdatasync` once per batch. Under load
//! batches grow while an `fsync` runs, so the cost per entry falls as traffic rises. A write
//! that fails is rolled back (the file is truncated to its last good length), so the chain on
//! disk stays intact, and the lost entries are reported like dropped ones.
//!
//! The file is opened in append mode. Exactly one writer per file: two processes appending to
//! one file would interleave two chains.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::{digest, hmac};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// `prev` of the first line of a file.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest string field, in bytes, before it is cut (and marked with [`TRUNCATED`]).
pub const MAX_FIELD: usize = 4096;

/// Marker appended to a string field cut at [`MAX_FIELD`] bytes.
pub const TRUNCATED: &str = "…[truncated]";

/// Longest line [`verify_file`] and the resume logic accept. Written lines stay far below it
/// (at most a dozen fields of [`MAX_FIELD`] bytes, even with every byte escaped).
pub const MAX_LINE: usize = 1 << 20;

/// Most entries written in one batch (one `write`, one `fsync`).
const MAX_BATCH: usize = 1024;

/// After a drop, [`AuditLog::record`] stops waiting for room for this long.
const NO_WAIT_AFTER_DROP: Duration = Duration::from_secs(1);

/// Chunk size when reading a file backwards to find its last line.
const TAIL_CHUNK: usize = 8 * 1024;

/// Outcome of the policy decision for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The call was forwarded.
    Allow,
    /// The proxy refused the call.
    Deny,
}

/// One MCP call, as recorded.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// When the call arrived (written as RFC 3339 UTC with milliseconds).
    pub time: SystemTime,
    /// The request id (also in the access log and the `X-Request-Id` header).
    pub request_id: String,
    /// Who made the call: token subject (`iss` + `sub` as the pipeline formats it) or
    /// certificate identity.
    pub principal: String,
    /// Organisation claim of the principal, when configured and present.
    pub organisation: Option<String>,
    /// Route name.
    pub route: String,
    /// JSON-RPC method (`tools/call`, `resources/read`, …).
    pub method: String,
    /// Tool name, resource URI or prompt name, when the method has one.
    pub target: Option<String>,
    /// Whether the call was forwarded.
    pub decision: Decision,
    /// Why (the rule that matched, or the refusal reason).
    pub reason: String,
    /// HTTP status of the upstream answer, if the call reached it.
    pub upstream_status: Option<u16>,
    /// Time from arrival to the end of the answer.
    pub duration_ms: u64,
    /// [`args_digest`] of the POST body that carried the call (its arguments are in it and
    /// are never logged themselves).
    pub args_sha256: Option<[u8; 32]>,
}

/// SHA-256 of the raw request body bytes, for [`AuditEntry::args_sha256`].
pub fn args_digest(raw_arguments: &[u8]) -> [u8; 32] {
    sha256(raw_arguments)
}

/// When the writer calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// After every batch (group commit): a crash loses at most the batch being written.
    #[default]
    EveryBatch,
    /// Never (the OS flushes in its own time; [`AuditLog::flush`] still syncs). For tests and
    /// for hosts where the log is shipped elsewhere anyway.
    Never,
}

/// How an [`AuditLog`] behaves.
#[derive(Clone)]
pub struct AuditOptions {
    /// HMAC-SHA-256 key; lines then carry `mac` instead of `hash` (see the module docs).
    pub hmac_key: Option<Vec<u8>>,
    /// Entries the queue holds before [`AuditLog::record`] has to wait.
    pub capacity: usize,
    /// How long [`AuditLog::record`] waits for room before dropping the entry.
    pub block: Duration,
    /// When to `fdatasync`.
    pub fsync: FsyncPolicy,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            hmac_key: None,
            capacity: 4096,
            block: Duration::from_millis(100),
            fsync: FsyncPolicy::EveryBatch,
        }
    }
}

impl std::fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOptions")
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("capacity", &self.capacity)
            .field("block", &self.block)
            .field("fsync", &self.fsync)
            .finish()
    }
}

/// Counters of an [`AuditLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Entries written to the file.
    pub written: u64,
    /// Entries dropped because the queue stayed full (or the writer had stopped).
    pub dropped: u64,
    /// Entries lost to write or sync errors.
    pub failed: u64,
}

/// Why the audit log could not be opened, or a file could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened, read, or written.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The existing file's last line cannot be continued (see [`Problem`]). Move the file
    /// aside (and verify it) to start a new chain.
    #[error("audit log {path}: cannot continue the chain: {problem}")]
    Resume {
        /// The file.
        path: PathBuf,
        /// What is wrong with its last line.
        problem: Problem,
    },
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file ends without a newline: a write was cut short, or the file was truncated.
    #[error("incomplete line (no newline at end of file)")]
    Incomplete,
    /// Longer than [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not a JSON object with the chain fields.
    #[error("not a valid audit line: {0}")]
    BadJson(String),
    /// Neither a `hash` nor a `mac` as the line's last field.
    #[error("no trailing hash or mac field")]
    NoDigest,
    /// The `hash` does not match the line: the line was edited.
    #[error("hash does not match the line (line edited)")]
    BadHash,
    /// The `mac` does not match the line: edited, or written with another key.
    #[error("mac does not match the line (line edited, or another key)")]
    BadMac,
    /// A key was given but the line carries only an unkeyed `hash`.
    #[error("line has no mac but a key was given (unauthenticated line)")]
    Unauthenticated,
    /// The line carries a `mac` but no key is configured (resume only: the writer must keep
    /// the file's mode).
    #[error("line has a mac but no key is configured")]
    KeyNeeded,
    /// `seq` is not the previous line's plus one.
    #[error("seq is {found}, expected {expected} (line missing, inserted or moved)")]
    SeqGap {
        /// What the chain expected.
        expected: u64,
        /// What the line says.
        found: u64,
    },
    /// `prev` is not the hash of the previous line.
    #[error("prev does not match the previous line (chain broken)")]
    BrokenChain,
}

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Result of [`verify_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Good lines before the first bad one (all lines if none is bad).
    pub lines: u64,
    /// `seq` of the last good line.
    pub last_seq: Option<u64>,
    /// Hex SHA-256 of the last good line ([`GENESIS`] for an empty file): the anchor to compare
    /// with an external copy, since cutting whole lines off the end is otherwise undetectable.
    pub head: String,
    /// Whether a key was given, so every good line's `mac` was checked.
    pub macs_checked: bool,
    /// Lines with a `mac` that could not be checked because no key was given.
    pub unchecked_macs: u64,
    /// The first bad line, if any.
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    /// Whether the whole file verified.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failure {
            Some(fail) => write!(
                f,
                "TAMPERED: line {}: {} ({} good lines before it)",
                fail.line, fail.problem, self.lines
            ),
            None => {
                write!(f, "OK: {} lines", self.lines)?;
                if let Some(seq) = self.last_seq {
                    write!(f, ", last seq {seq}")?;
                }
                write!(f, ", head {}", self.head)?;
                if self.macs_checked {
                    write!(f, ", all MACs verified")
                } else if self.unchecked_macs > 0 {
                    write!(
                        f,
                        "; WARNING: {} MACs not checked (no key given): chain only",
                        self.unchecked_macs
                    )
                } else {
                    write!(f, "; unkeyed hashes (detects edits, not a full rewrite)")
                }
            }
        }
    }
}

/// Verifies an audit file, streaming it line by line. `Err` only for I/O failures; tampering
/// is reported in [`VerifyReport::failure`].
///
/// With `hmac_key`, every line must carry a valid `mac`. Without one, `hash` lines are checked
/// and `mac` lines are counted in [`VerifyReport::unchecked_macs`] (chain and `seq` are still
/// checked).
pub fn verify_file(path: &Path, hmac_key: Option<&[u8]>) -> Result<VerifyReport, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let key = hmac_key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k));
    let mut report = VerifyReport {
        lines: 0,
        last_seq: None,
        head: GENESIS.to_owned(),
        macs_checked: key.is_some(),
        unchecked_macs: 0,
        failure: None,
    };
    let mut expected_seq = 1u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // `take` bounds memory on a hostile file with no newlines.
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io_err)?;
        if n == 0 {
            return Ok(report);
        }
        let line_no = report.lines + 1;
        let fail = |problem| VerifyFailure {
            line: line_no,
            problem,
        };
        let line = match buf.strip_suffix(b"\n") {
            Some(line) => line,
            None if buf.len() > MAX_LINE => {
                report.failure = Some(fail(Problem::TooLong));
                return Ok(report);
            }
            None => {
                report.failure = Some(fail(Problem::Incomplete));
                return Ok(report);
            }
        };
        let checked = match check_line(line, key.as_ref(), false) {
            Ok(c) => c,
            Err(problem) => {
                report.failure = Some(fail(problem));
                return Ok(report);
            }
        };
        if checked.seq != expected_seq {
            report.failure = Some(fail(Problem::SeqGap {
                expected: expected_seq,
                found: checked.seq,
            }));
            return Ok(report);
        }
        if checked.prev != report.head {
            report.failure = Some(fail(Problem::BrokenChain));
            return Ok(report);
        }
        if checked.mac_unchecked {
            report.unchecked_macs += 1;
        }
        report.lines = line_no;
        report.last_seq = Some(checked.seq);
        report.head = hex(&sha256(line));
        expected_seq = checked.seq.saturating_add(1);
    }
}

/// The chain fields every line has; other keys are ignored.
#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    mac: Option<String>,
}

struct CheckedLine {
    seq: u64,
    prev: String,
    mac_unchecked: bool,
}

const HASH_PREFIX: &[u8] = b",\"hash\":\"";
const MAC_PREFIX: &[u8] = b",\"mac\":\"";
const DIGEST_HEX_LEN: usize = 64;

/// Checks one line (without its newline): JSON shape and its own digest. `resume` demands the
/// line's mode match the key (a writer must not mix modes); verification instead skips `mac`s
/// it has no key for.
fn check_line(line: &[u8], key: Option<&hmac::Key>, resume: bool) -> Result<CheckedLine, Problem> {
    let fields: ChainFields =
        serde_json::from_slice(line).map_err(|e| Problem::BadJson(e.to_string()))?;
    // The digest is the last field, so the signed body is the line with that field cut out
    // and the object closed again: exact bytes, no re-serialisation.
    let (prefix, is_mac) = if fields.mac.is_some() && fields.hash.is_some() {
        return Err(Problem::BadJson("both hash and mac".into()));
    } else if fields.mac.is_some() {
        (MAC_PREFIX, true)
    } else if fields.hash.is_some() {
        (HASH_PREFIX, false)
    } else {
        return Err(Problem::NoDigest);
    };
    let suffix_len = prefix.len() + DIGEST_HEX_LEN + 2;
    let split = line
        .len()
        .checked_sub(suffix_len)
        .ok_or(Problem::NoDigest)?;
    let (body_open, suffix) = line.split_at(split);
    let digest_hex = suffix
        .strip_prefix(prefix)
        .and_then(|s| s.strip_suffix(b"\"}"))
        .ok_or(Problem::NoDigest)?;
    // serde_json rejects duplicate keys, so the trailing field is the one it parsed; this
    // comparison only guards against escapes that decode to the same string.
    let parsed = fields.mac.as_deref().or(fields.hash.as_deref());
    if parsed.map(str::as_bytes) != Some(digest_hex) {
        return Err(Problem::NoDigest);
    }
    let claimed = unhex(digest_hex).ok_or(Problem::NoDigest)?;
    let mut body = Vec::with_capacity(body_open.len() + 1);
    body.extend_from_slice(body_open);
    body.push(b'}');
    let mut mac_unchecked = false;
    match (is_mac, key) {
        (true, Some(key)) => {
            hmac::verify(key, &body, &claimed).map_err(|_| Problem::BadMac)?;
        }
        (true, None) if resume => return Err(Problem::KeyNeeded),
        (true, None) => mac_unchecked = true,
        (false, Some(_)) => return Err(Problem::Unauthenticated),
        (false, None) => {
            verify_slices_are_equal(&sha256(&body), &claimed).map_err(|_| Problem::BadHash)?;
        }
    }
    Ok(CheckedLine {
        seq: fields.seq,
        prev: fields.prev,
        mac_unchecked,
    })
}

/// Where the chain continues.
#[derive(Debug, Clone)]
struct ChainHead {
    next_seq: u64,
    prev: String,
}

#[derive(Serialize)]
struct CallLine<'a> {
    time: String,
    request_id: std::borrow::Cow<'a, str>,
    principal: std::borrow::Cow<'a, str>,
    organisation: Option<std::borrow::Cow<'a, str>>,
    route: std::borrow::Cow<'a, str>,
    method: std::borrow::Cow<'a, str>,
    target: Option<std::borrow::Cow<'a, str>>,
    decision: Decision,
    reason: std::borrow::Cow<'a, str>,
    upstream_status: Option<u16>,
    duration_ms: u64,
    args_sha256: Option<String>,
    seq: u64,
    prev: &'a str,
}

#[derive(Serialize)]
struct DroppedLine<'a> {
    time: String,
    event: &'static str,
    count: u64,
    seq: u64,
    prev: &'a str,
}

enum Msg {
    Entry(Box<AuditEntry>),
    Flush(oneshot::Sender<io::Result<()>>),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Losses not yet recorded in the file as an `audit_dropped` line.
    unrecorded: AtomicU64,
}

/// The audit log writer. Share it behind an `Arc`; dropping the last handle lets the writer
/// drain the queue and stop (use [`close`](Self::close) to wait for that).
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
    block: Duration,
    done: oneshot::Receiver<()>,
    path: PathBuf,
    opened: std::time::Instant,
    /// [`millis`](Self::millis) at the last drop; 0 before any.
    last_drop_ms: AtomicU64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating if needed, mode 0600) `path` for appending, continues the chain from
    /// its last line, and starts the writer thread. Does not need a tokio runtime.
    ///
    /// Only the last line is read (backwards, so start-up cost does not grow with the file)
    /// and it must pass its own `hash`/`mac` check in the configured mode; a torn, edited, or
    /// differently keyed tail is an [`AuditError::Resume`] rather than a silently forked
    /// chain. Run [`verify_file`] for the whole file.
    pub fn open(path: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        let io_err = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let mut open = OpenOptions::new();
        open.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            open.mode(0o600);
        }
        let mut file = open.open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let key = options
            .hmac_key
            .as_deref()
            .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k));
        let head = if len == 0 {
            if options.fsync != FsyncPolicy::Never {
                // Make the new file's directory entry durable too; best effort.
                sync_parent(path);
            }
            ChainHead {
                next_seq: 1,
                prev: GENESIS.to_owned(),
            }
        } else {
            let last = match read_last_line(&mut file, len).map_err(io_err)? {
                Ok(line) => line,
                Err(problem) => {
                    return Err(AuditError::Resume {
                        path: path.to_owned(),
                        problem,
                    });
                }
            };
            let checked =
                check_line(&last, key.as_ref(), true).map_err(|problem| AuditError::Resume {
                    path: path.to_owned(),
                    problem,
                })?;
            ChainHead {
                next_seq: checked.seq.saturating_add(1),
                prev: hex(&sha256(&last)),
            }
        };
        tracing::info!(
            path = %path.display(),
            next_seq = head.next_seq,
            prev = %head.prev,
            keyed = key.is_some(),
            "audit log opened"
        );

        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        let (done_tx, done) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            file,
            len,
            head,
            key,
            fsync: options.fsync,
            counters: counters.clone(),
            path: path.to_owned(),
        };
        std::thread::Builder::new()
            .name("mcp-edge-audit".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(io_err)?;
        Ok(AuditLog {
            tx,
            counters,
            block: options.block,
            done,
            path: path.to_owned(),
            opened: std::time::Instant::now(),
            last_drop_ms: AtomicU64::new(0),
        })
    }

    /// Queues `entry`. Waits at most [`AuditOptions::block`] for room, then drops the entry
    /// (counted, and recorded in the file as an `audit_dropped` line).
    pub async fn record(&self, entry: AuditEntry) {
        let msg = match self.tx.try_send(Msg::Entry(Box::new(entry))) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
            Err(mpsc::error::TrySendError::Closed(_)) => return self.note_drop(),
        };
        // After a recent drop the disk is evidently stuck: waiting again would only add the
        // full delay to every request while it stays stuck.
        if self.block.is_zero() || self.dropped_recently() {
            return self.note_drop();
        }
        match tokio::time::timeout(self.block, self.tx.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => self.note_drop(),
        }
    }

    /// Queues `entry` without waiting (for `Drop` impls and other sync code). Returns whether
    /// it was queued; a refused entry is counted and recorded like a dropped one.
    pub fn try_record(&self, entry: AuditEntry) -> bool {
        match self.tx.try_send(Msg::Entry(Box::new(entry))) {
            Ok(()) => true,
            Err(_) => {
                self.note_drop();
                false
            }
        }
    }

    /// Waits until every entry queued before this call is written and synced to disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| io::Error::other("audit writer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("audit writer stopped"))?
    }

    /// Flushes, stops the writer, and waits for it to finish.
    pub async fn close(self) -> io::Result<()> {
        let flushed = self.flush().await;
        let AuditLog { tx, done, .. } = self;
        drop(tx);
        done.await
            .map_err(|_| io::Error::other("audit writer panicked"))?;
        flushed
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    fn dropped_recently(&self) -> bool {
        let last = self.last_drop_ms.load(Ordering::Relaxed);
        last != 0 && self.millis().saturating_sub(last) < NO_WAIT_AFTER_DROP.as_millis() as u64
    }

    /// Milliseconds since the log was opened, never 0 (0 means "no drop yet").
    fn millis(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn note_drop(&self) {
        self.last_drop_ms.store(self.millis(), Ordering::Relaxed);
        let total = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.counters.unrecorded.fetch_add(1, Ordering::Relaxed);
        // Powers of two: the first drop is always logged, a flood is not.
        if total.is_power_of_two() {
            tracing::warn!(
                path = %self.path.display(),
                dropped_total = total,
                "audit queue full: entry dropped"
            );
        }
    }
}

struct Writer {
    file: File,
    /// File length after the last good write; a failed write is truncated back to it.
    len: u64,
    head: ChainHead,
    key: Option<hmac::Key>,
    fsync: FsyncPolicy,
    counters: Arc<Counters>,
    path: PathBuf,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            self.write_batch(&mut batch);
        }
        // Channel closed and drained: make the tail durable before exiting.
        let _ = self.file.sync_data();
        tracing::info!(
            path = %self.path.display(),
            last_seq = self.head.next_seq.saturating_sub(1),
            head = %self.head.prev,
            "audit log closed"
        );
    }

    fn write_batch(&mut self, batch: &mut Vec<Msg>) {
        let mut head = self.head.clone();
        let mut buf = Vec::new();
        let mut entries = 0u64;
        let mut flushes = Vec::new();
        let unrecorded = self.counters.unrecorded.swap(0, Ordering::Relaxed);
        if unrecorded > 0 {
            self.append_dropped(&mut buf, &mut head, unrecorded);
        }
        for msg in batch.drain(..) {
            match msg {
                Msg::Entry(entry) => {
                    self.append_entry(&mut buf, &mut head, &entry);
                    entries += 1;
                }
                Msg::Flush(reply) => flushes.push(reply),
            }
        }
        let sync = self.fsync == FsyncPolicy::EveryBatch || !flushes.is_empty();
        let result = if buf.is_empty() {
            if sync { self.file.sync_data() } else { Ok(()) }
        } else {
            self.file
                .write_all(&buf)
                .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) })
        };
        match &result {
            Ok(()) if !buf.is_empty() => {
                self.len += buf.len() as u64;
                self.head = head;
                self.counters.written.fetch_add(entries, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(e) => {
                // Roll back a partial write so the next batch continues a valid chain; the
                // lost entries are reported in the file by the next `audit_dropped` line.
                let rollback = self.file.set_len(self.len);
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    lost = entries,
                    rolled_back = rollback.is_ok(),
                    "audit write failed"
                );
                self.counters.failed.fetch_add(entries, Ordering::Relaxed);
                self.counters
                    .unrecorded
                    .fetch_add(entries + unrecorded, Ordering::Relaxed);
            }
        }
        for reply in flushes {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }

    fn append_entry(&self, buf: &mut Vec<u8>, head: &mut ChainHead, e: &AuditEntry) {
        let line = CallLine {
            time: rfc3339(e.time),
            request_id: clip(&e.request_id),
            principal: clip(&e.principal),
            organisation: e.organisation.as_deref().map(clip),
            route: clip(&e.route),
            method: clip(&e.method),
            target: e.target.as_deref().map(clip),
            decision: e.decision,
            reason: clip(&e.reason),
            upstream_status: e.upstream_status,
            duration_ms: e.duration_ms,
            args_sha256: e.args_sha256.as_ref().map(|d| hex(d)),
            seq: head.next_seq,
            prev: &head.prev,
        };
        self.append_line(buf, head, serde_json::to_vec(&line));
    }

    fn append_dropped(&self, buf: &mut Vec<u8>, head: &mut ChainHead, count: u64) {
        let line = DroppedLine {
            time: rfc3339(SystemTime::now()),
            event: "audit_dropped",
            count,
            seq: head.next_seq,
            prev: &head.prev,
        };
        self.append_line(buf, head, serde_json::to_vec(&line));
    }

    /// Seals a serialised object with its digest, appends it, and advances `head`.
    fn append_line(
        &self,
        buf: &mut Vec<u8>,
        head: &mut ChainHead,
        body: serde_json::Result<Vec<u8>>,
    ) {
        // Serialising plain structs of strings and numbers cannot fail; should it ever, the
        // entry is counted as lost rather than written half-formed.
        let body = match body {
            Ok(b) if b.last() == Some(&b'}') => b,
            _ => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let (prefix, digest) = match &self.key {
            Some(key) => (MAC_PREFIX, hex(hmac::sign(key, &body).as_ref())),
            None => (HASH_PREFIX, hex(&sha256(&body))),
        };
        let start = buf.len();
        buf.extend_from_slice(&body[..body.len() - 1]);
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(digest.as_bytes());
        buf.extend_from_slice(b"\"}");
        head.prev = hex(&sha256(&buf[start..]));
        head.next_seq = head.next_seq.saturating_add(1);
        buf.push(b'\n');
    }
}

/// Last line of a non-empty file (without its newline), read backwards in chunks so resuming
/// a large log costs one or two reads.
fn read_last_line(file: &mut File, len: u64) -> io::Result<Result<Vec<u8>, Problem>> {
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let take = TAIL_CHUNK.min(usize::try_from(pos).unwrap_or(TAIL_CHUNK));
        pos -= take as u64;
        let mut chunk = vec![0u8; take];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        if tail.last() != Some(&b'\n') {
            return Ok(Err(Problem::Incomplete));
        }
        let body = &tail[..tail.len() - 1];
        if let Some(nl) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Ok(body[nl + 1..].to_vec()));
        }
        if pos == 0 {
            return Ok(Ok(body.to_vec()));
        }
        if body.len() > MAX_LINE {
            return Ok(Err(Problem::TooLong));
        }
    }
}

fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Cuts a field at [`MAX_FIELD`] bytes (on a character boundary) and marks the cut.
fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_FIELD {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{TRUNCATED}", &s[..end]))
}

/// RFC 3339 UTC with milliseconds. Clamped to the range the formatter handles (it panics
/// before 1970 and fails after 9999) — a badly set clock must not crash the writer.
fn rfc3339(t: SystemTime) -> String {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(MAX_SECS));
    humantime::format_rfc3339_millis(UNIX_EPOCH + secs).to_string()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Lower-case hex only: the writer never emits upper case, so accepting it would let the same
/// line exist in two spellings.
fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            time: UNIX_EPOCH + Duration::from_millis(1_790_000_000_000 + i),
            request_id: format!("req-{i}"),
            principal: "https://idp.example|alice".into(),
            organisation: Some("acme".into()),
            route: "memory".into(),
            method: "tools/call".into(),
            target: Some("search".into()),
            decision: Decision::Allow,
            reason: "rule 3".into(),
            upstream_status: Some(200),
            duration_ms: 12,
            args_sha256: Some(args_digest(br#"{"q":"x"}"#)),
        }
    }

    fn quick() -> AuditOptions {
        AuditOptions {
            fsync: FsyncPolicy::Never,
            ..AuditOptions::default()
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn line_has_every_field_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, quick()).unwrap();
        log.record(entry(1)).await;
        log.close().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.strip_suffix('\n').unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let order = [
            "time",
            "request_id",
            "principal",
            "organisation",
            "route",
            "method",
            "target",
            "decision",
            "reason",
            "upstream_status",
            "duration_ms",
            "args_sha256",
            "seq",
            "prev",
            "hash",
        ];
        assert_eq!(v.as_object().unwrap().len(), order.len());
        // serde_json's map sorts keys, so check the written order on the raw text.
        let positions: Vec<usize> = order
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{line}");
        assert!(line.starts_with(r#"{"time":"2026-09-21T"#), "{line}");
        assert!(line.contains(r#""decision":"allow""#));
        assert!(line.contains(&format!(r#""seq":1,"prev":"{GENESIS}","hash":""#)));
        assert_eq!(
            v["args_sha256"],
            hex(&sha256(br#"{"q":"x"}"#)).as_str(),
            "arguments hashed, never logged"
        );
        assert!(!line.contains(r#"\"q\""#));
    }

    #[tokio::test]
    async fn hostile_strings_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, quick()).unwrap();
        let mut e = entry(1);
        e.principal = "alice\n{\"seq\":99}\r\u{2028}\"".into();
        e.target = Some("é".repeat(MAX_FIELD)); // 2 bytes each: must be cut
        e.organisation = None;
        e.upstream_status = None;
        e.args_sha256 = None;
        log.record(e).await;
        log.close().await.unwrap();
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(v["principal"], "alice\n{\"seq\":99}\r\u{2028}\"");
        let target = v["target"].as_str().unwrap();
        assert!(target.ends_with(TRUNCATED));
        assert!(target.len() <= MAX_FIELD + TRUNCATED.len());
        assert!(v["organisation"].is_null() && v["args_sha256"].is_null());
        assert!(verify_file(&path, None).unwrap().is_ok());
    }

    #[tokio::test]
    async fn keyed_log_verifies_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let opts = AuditOptions {
            hmac_key: Some(key.clone()),
            ..quick()
        };
        let log = AuditLog::open(&path, opts).unwrap();
        for i in 0..3 {
            log.record(entry(i)).await;
        }
        log.close().await.unwrap();
        assert!(lines(&path)[0].contains(r#","mac":""#));

        let ok = verify_file(&path, Some(&key)).unwrap();
        assert!(ok.is_ok() && ok.macs_checked, "{ok}");
        assert_eq!(ok.last_seq, Some(3));

        let bad = verify_file(&path, Some(b"another key")).unwrap();
        assert_eq!(
            bad.failure,
            Some(VerifyFailure {
                line: 1,
                problem: Problem::BadMac
            })
        );

        let keyless = verify_file(&path, None).unwrap();
        assert!(keyless.is_ok());
        assert_eq!(keyless.unchecked_macs, 3);
        assert!(keyless.to_string().contains("WARNING"));
    }

    #[tokio::test]
    async fn rewritten_keyed_line_cannot_be_resealed_without_key() {
        // The attacker edits a line and recomputes an unkeyed digest (all they can do).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = vec![7u8; 32];
        let log = AuditLog::open(
            &path,
            AuditOptions {
                hmac_key: Some(key.clone()),
                ..quick()
            },
        )
        .unwrap();
        log.record(entry(1)).await;
        log.close().await.unwrap();
        let line = lines(&path).remove(0);
        let cut = line.rfind(",\"mac\":\"").unwrap();
        let body = format!("{}}}", &line[..cut].replace("\"allow\"", "\"deny\""));
        let forged = format!(
            "{},\"hash\":\"{}\"}}\n",
            &body[..body.len() - 1],
            hex(&sha256(body.as_bytes()))
        );
        std::fs::write(&path, forged).unwrap();
        // Fine to a verifier without the key (it is a valid unkeyed file) …
        assert!(verify_file(&path, None).unwrap().is_ok());
        // … but refused by one that has it.
        assert_eq!(
            verify_file(&path, Some(&key))
                .unwrap()
                .failure
                .unwrap()
                .problem,
            Problem::Unauthenticated
        );
    }

    #[tokio::test]
    async fn resume_refuses_mode_or_key_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, quick()).unwrap();
        log.record(entry(1)).await;
        log.close().await.unwrap();
        let keyed = AuditOptions {
            hmac_key: Some(vec![1; 32]),
            ..quick()
        };
        assert!(matches!(
            AuditLog::open(&path, keyed.clone()),
            Err(AuditError::Resume {
                problem: Problem::Unauthenticated,
                ..
            })
        ));

        let path2 = dir.path().join("keyed.jsonl");
        let log = AuditLog::open(&path2, keyed).unwrap();
        log.record(entry(1)).await;
        log.close().await.unwrap();
        assert!(matches!(
            AuditLog::open(&path2, quick()),
            Err(AuditError::Resume {
                problem: Problem::KeyNeeded,
                ..
            })
        ));
        let other_key = AuditOptions {
            hmac_key: Some(vec![2; 32]),
            ..quick()
        };
        assert!(matches!(
            AuditLog::open(&path2, other_key),
            Err(AuditError::Resume {
                problem: Problem::BadMac,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn resume_refuses_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, quick()).unwrap();
        log.record(entry(1)).await;
        log.close().await.unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            AuditLog::open(&path, quick()),
            Err(AuditError::Resume {
                problem: Problem::Incomplete,
                ..
            })
        ));
    }

    #[test]
    fn last_line_found_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        for (content, want) in [
            (b"only\n".to_vec(), b"only".to_vec()),
            (b"a\nb\n".to_vec(), b"b".to_vec()),
            (
                [
                    vec![b'x'; 3 * TAIL_CHUNK],
                    b"\n".to_vec(),
                    vec![b'y'; 2 * TAIL_CHUNK + 5],
                    b"\n".to_vec(),
                ]
                .concat(),
                vec![b'y'; 2 * TAIL_CHUNK + 5],
            ),
            (
                [
                    vec![b'x'; TAIL_CHUNK - 1],
                    b"\n".to_vec(),
                    vec![b'y'; 1],
                    b"\n".to_vec(),
                ]
                .concat(),
                vec![b'y'],
            ),
            (
                [b"x\n".to_vec(), vec![b'z'; TAIL_CHUNK - 1], b"\n".to_vec()].concat(),
                vec![b'z'; TAIL_CHUNK - 1],
            ),
        ] {
            std::fs::write(&path, &content).unwrap();
            let mut f = File::open(&path).unwrap();
            let got = read_last_line(&mut f, content.len() as u64)
                .unwrap()
                .unwrap();
            assert_eq!(got, want);
        }
        std::fs::write(&path, b"a\nb").unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(read_last_line(&mut f, 3).unwrap(), Err(Problem::Incomplete));
        let huge = [vec![b'q'; MAX_LINE + TAIL_CHUNK], b"\n".to_vec()].concat();
        let with_prefix = [b"p\n".to_vec(), huge].concat();
        std::fs::write(&path, &with_prefix).unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(
            read_last_line(&mut f, with_prefix.len() as u64).unwrap(),
            Err(Problem::TooLong)
        );
    }

    #[test]
    fn dropped_entries_are_recorded_in_the_chain() {
        // Drive the writer directly: a full queue is hard to provoke deterministically.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let counters = Arc::new(Counters::default());
        let mut w = Writer {
            file,
            len: 0,
            head: ChainHead {
                next_seq: 1,
                prev: GENESIS.into(),
            },
            key: None,
            fsync: FsyncPolicy::Never,
            counters: counters.clone(),
            path: path.clone(),
        };
        w.write_batch(&mut vec![Msg::Entry(Box::new(entry(1)))]);
        counters.unrecorded.store(5, Ordering::Relaxed);
        w.write_batch(&mut vec![Msg::Entry(Box::new(entry(2)))]);
        let got = lines(&path);
        assert_eq!(got.len(), 3);
        let marker: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
        assert_eq!(marker["event"], "audit_dropped");
        assert_eq!(marker["count"], 5);
        assert_eq!(marker["seq"], 2);
        let report = verify_file(&path, None).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.last_seq, Some(3));
        assert_eq!(counters.written.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn full_queue_drops_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(
            &path,
            AuditOptions {
                capacity: 1,
                block: Duration::ZERO,
                ..quick()
            },
        )
        .unwrap();
        // A burst far faster than any disk: some entries must be refused, none may block.
        let queued = (0..2000).filter(|&i| log.try_record(entry(i))).count() as u64;
        log.record(entry(9999)).await;
        log.flush().await.unwrap();
        let stats = log.stats();
        assert!(stats.dropped > 0, "{stats:?}");
        assert!(queued + 1 >= stats.written);
        // One more entry forces the writer to record the loss.
        log.record(entry(10_000)).await;
        log.close().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let recorded: u64 = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "audit_dropped")
            .filter_map(|v| v["count"].as_u64())
            .sum();
        assert_eq!(recorded, stats.dropped);
        assert!(verify_file(&path, None).unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_drop_suspends_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("a.jsonl"), quick()).unwrap();
        assert!(!log.dropped_recently());
        log.note_drop();
        assert!(log.dropped_recently());
        assert_eq!(log.stats().dropped, 1);
        log.close().await.unwrap();
    }

    #[tokio::test]
    async fn flush_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, AuditOptions::default()).unwrap();
        for i in 0..10 {
            log.record(entry(i)).await;
        }
        log.flush().await.unwrap();
        assert_eq!(lines(&path).len(), 10);
        assert_eq!(
            log.stats(),
            AuditStats {
                written: 10,
                dropped: 0,
                failed: 0
            }
        );
        log.close().await.unwrap();
    }

    #[test]
    fn check_line_rejections() {
        type Case<'a> = (&'a [u8], fn(&Problem) -> bool);
        let cases: &[Case] = &[
            (b"", |p| matches!(p, Problem::BadJson(_))),
            (b"[1]", |p| matches!(p, Problem::BadJson(_))),
            (br#"{"seq":1,"prev":"x"}"#, |p| *p == Problem::NoDigest),
            (br#"{"seq":1,"prev":"x","hash":"ab"}"#, |p| {
                *p == Problem::NoDigest
            }),
            (br#"{"seq":1,"seq":2,"prev":"x","hash":"ab"}"#, |p| {
                matches!(p, Problem::BadJson(_))
            }),
        ];
        for (line, ok) in cases {
            let err = check_line(line, None, false).err().unwrap();
            assert!(ok(&err), "{:?}: {err:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn rfc3339_never_panics() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let before = UNIX_EPOCH.checked_sub(Duration::from_secs(10)).unwrap();
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn hex_round_trip() {
        let d = sha256(b"x");
        assert_eq!(unhex(hex(&d).as_bytes()).unwrap(), d);
        assert!(unhex(b"AB").is_none());
        assert!(unhex(b"a").is_none());
    }
}
