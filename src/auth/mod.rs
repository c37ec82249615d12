//! Identity: bearer tokens (JWT with JWKS key sources), and soon client certificates, Origin
//! and Host checks, and the OAuth Protected Resource Metadata answered to clients.

pub mod bearer;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod origin;
/// Short-lived JWTs the proxy signs to tell backends who the caller is.
pub mod upstream_token;
