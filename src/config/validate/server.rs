//! The server-wide sections: `[http]`, `[sse]`, `[admin]`, `[sessions]`, `[shutdown]`, `[log]`
//! and `[audit]`.

use super::{Resolve, nonzero};
use crate::config::file::{
    AdminFile, AuditFile, AuditFsync, HttpFile, LogFile, SessionsFile, SseFile,
};
use crate::config::{
    Admin, AuditSettings, ConfigError, HttpLimits, LogSettings, SessionSettings, SseSettings,
};

/// Checks `[http]`: timeouts are positive and size limits within workable ranges.
pub(super) fn http(h: HttpFile) -> Result<HttpLimits, ConfigError> {
    nonzero("http.header_read_timeout", h.header_read_timeout)?;
    nonzero("http.h2_keepalive_interval", h.h2_keepalive_interval)?;
    nonzero("http.h2_keepalive_timeout", h.h2_keepalive_timeout)?;
    nonzero("http.first_request_timeout", h.first_request_timeout)?;
    nonzero("http.idle_timeout", h.idle_timeout)?;
    if !(8192..=1024 * 1024).contains(&h.max_header_bytes) {
        return Err(ConfigError::invalid(
            "http.max_header_bytes",
            format!("{} is outside 8192..=1048576", h.max_header_bytes),
            "keep the default 65536 unless clients send unusually large headers",
        ));
    }
    if !(8..=1000).contains(&h.max_headers) {
        return Err(ConfigError::invalid(
            "http.max_headers",
            format!("{} is outside 8..=1000", h.max_headers),
            "keep the default 100",
        ));
    }
    if h.max_request_body_bytes == 0 {
        return Err(ConfigError::invalid(
            "http.max_request_body_bytes",
            "must be at least 1",
            "set a byte count such as 4194304 (4 MiB)",
        ));
    }
    if h.h2_max_concurrent_streams == 0 {
        return Err(ConfigError::invalid(
            "http.h2_max_concurrent_streams",
            "must be at least 1",
            "keep the default 200",
        ));
    }
    Ok(HttpLimits {
        header_read_timeout: h.header_read_timeout,
        max_header_bytes: h.max_header_bytes,
        max_headers: h.max_headers,
        max_request_body_bytes: h.max_request_body_bytes,
        h2_keepalive_interval: h.h2_keepalive_interval,
        h2_keepalive_timeout: h.h2_keepalive_timeout,
        h2_max_concurrent_streams: h.h2_max_concurrent_streams,
        first_request_timeout: h.first_request_timeout,
        idle_timeout: h.idle_timeout,
    })
}

/// Checks `[sse]`: the idle limit must outlast several heartbeats; the stream lifetime, when
/// set, and the client write timeout are positive.
pub(super) fn sse(s: &SseFile) -> Result<SseSettings, ConfigError> {
    nonzero("sse.heartbeat_interval", s.heartbeat_interval)?;
    nonzero("sse.idle_timeout", s.idle_timeout)?;
    if s.idle_timeout <= s.heartbeat_interval {
        return Err(ConfigError::invalid(
            "sse.idle_timeout",
            "is not longer than sse.heartbeat_interval",
            "make the idle limit several heartbeats long (defaults: 15s heartbeat, 30m idle)",
        ));
    }
    if s.max_stream_lifetime.is_some_and(|d| d.is_zero()) {
        return Err(ConfigError::invalid(
            "sse.max_stream_lifetime",
            "must be longer than 0s",
            "set a duration such as \"1h\", or remove the key to let streams run without limit",
        ));
    }
    nonzero("sse.client_write_timeout", s.client_write_timeout)?;
    Ok(SseSettings {
        heartbeat_interval: s.heartbeat_interval,
        idle_timeout: s.idle_timeout,
        max_stream_lifetime: s.max_stream_lifetime,
        client_write_timeout: s.client_write_timeout,
    })
}

/// Checks `[admin]`.
pub(super) fn admin(admin: Option<AdminFile>) -> Result<Option<Admin>, ConfigError> {
    Ok(match admin {
        Some(a) => Some(Admin {
            bind: a.bind.parse().map_err(|_| {
                ConfigError::invalid(
                    "admin.bind",
                    format!("`{}` is not a socket address", a.bind),
                    "write it as IP:PORT, e.g. \"127.0.0.1:9901\"",
                )
            })?,
        }),
        None => None,
    })
}

/// Checks `[sessions]` and resolves its key paths.
pub(super) fn sessions(
    s: &SessionsFile,
    resolve: Resolve<'_>,
) -> Result<SessionSettings, ConfigError> {
    if s.key_file.is_none() && !s.previous_key_files.is_empty() {
        return Err(ConfigError::invalid(
            "sessions.previous_key_files",
            "is set without sessions.key_file",
            "set `key_file` to the current key; previous keys only open ids sealed before a rotation",
        ));
    }
    nonzero("sessions.max_lifetime", s.max_lifetime)?;
    Ok(SessionSettings {
        previous_key_files: s.previous_key_files.iter().map(|p| resolve(p)).collect(),
        key_file: s.key_file.as_deref().map(resolve),
        max_lifetime: s.max_lifetime,
    })
}

/// Checks `[log]`.
pub(super) fn log(l: LogFile) -> Result<LogSettings, ConfigError> {
    if let Err(e) = valid_log_filter(&l.level) {
        return Err(ConfigError::invalid(
            "log.level",
            format!("`{}` is not a log filter: {e}", l.level),
            "use a level (error, warn, info, debug, trace) or directives like \"info,mcp_edge=debug\"",
        ));
    }
    Ok(LogSettings {
        format: l.format,
        level: l.level,
    })
}

/// Resolves `[audit]`.
pub(super) fn audit(a: Option<AuditFile>, resolve: Resolve<'_>) -> Option<AuditSettings> {
    a.map(|a| AuditSettings {
        file: resolve(&a.file),
        hmac_key_file: a.hmac_key_file.as_deref().map(resolve),
        fsync: match a.fsync {
            AuditFsync::Batch => crate::audit::FsyncPolicy::EveryBatch,
            AuditFsync::Never => crate::audit::FsyncPolicy::Never,
        },
    })
}

/// Whether `level` is a usable filter: `EnvFilter` reads a bare unknown word as a target name,
/// which would silently turn off all other logging, so bare words must be levels.
fn valid_log_filter(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "`{directive}` is neither a level nor `target=level`"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
