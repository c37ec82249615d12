//! Identity: who the caller is ([`identity`]: the one `Identity` per request and the
//! `authenticate` phase), from bearer tokens (JWT with JWKS key sources, introspection) and
//! client certificates; Origin and Host checks; the OAuth Protected Resource Metadata answered
//! to clients; and the identity tokens the proxy signs for backends.

pub mod bearer;
pub mod identity;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod origin;
pub mod token_cache;
/// Short-lived JWTs the proxy signs to tell backends who the caller is.
pub mod upstream_token;

pub use identity::{AuthError, AuthRefusal, Identity, authenticate};
