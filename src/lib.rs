//! mcp-edge: an HTTPS zero-trust edge proxy for MCP (Model Context Protocol) servers.
//!
//! # Layout
//! The request path is described once, in [`proxy`]: named phases (`admit` → `authenticate`
//! → `pick_endpoint` → `inspect` → `authorize` → `limits` → `forward` → `respond` → `log`) over one
//! request context. Start reading there; `docs/architecture.md` maps every behaviour to its
//! file.
//!
//! - [`listener`]: accept loop, connection cap, TLS handshake deadline.
//! - [`tls`]: rustls server config, SNI certificate resolver.
//! - [`http`]: hyper connection settings (first-request and idle deadlines), the HTTPS client,
//!   header rules, POST media types.
//! - [`proxy`]: the per-request pipeline, the two transports, and the proxy's own error
//!   answers (`proxy::error`, the one place that chooses status codes).
//! - [`auth`]: the one `Identity` per request and `authenticate`; Origin/Host, client
//!   certificates, bearer tokens (JWT, JWKS, introspection), upstream identity tokens.
//! - [`mcp`]: JSON-RPC envelope reader, MCP header rules, answer filter.
//! - [`policy`]: which methods, tools and resources a principal may use.
//! - [`limits`]: rates, requests in flight and open streams per caller; local or in Redis.
//! - [`upstream`]: upstream client pool, round-robin, session affinity tags.
//! - [`sse`]: streamed relay body (heartbeats, idle limit, drain, event transforms) and SSE
//!   framing.
//!
//! Beside the path: [`config`] (typed, validated config), [`certs`] (PEM loading and checks),
//! [`telemetry`] (the request record written at the end: access log, metrics, spans; W3C
//! trace context), [`metrics`] (the metric families and each route's series; a leaf module,
//! like [`glob`], the config's one pattern language), [`monitor`] (expiry checks and the
//! `/metrics` exposition), [`shutdown`] (drain signals), [`admin`] (health
//! endpoints), [`prepare`] (config to a servable snapshot, shared by start, reload and
//! `check`), [`app`] (wiring), [`reload`] (live reloads), [`check`] (`mcp-edge check`) and
//! [`demo`] (`mcp-edge demo`).
// `deny`, not `forbid`: socket activation (src/systemd.rs) adopts inherited file descriptors,
// which std only offers as `unsafe`; that one spot allows it with a SAFETY note.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod check;
pub mod config;
pub mod demo;
pub mod glob;
pub mod http;
pub mod limits;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod monitor;
pub mod policy;
pub mod prepare;
pub mod proxy;
pub mod reload;
pub mod session;
pub mod shutdown;
pub mod sse;
/// systemd: readiness/reload/stop notifications, watchdog pings, socket activation.
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod upstream;
