//! Access checks in front of the upstream: Origin and Host today; bearer tokens, client
//! certificates and OAuth Protected Resource Metadata as issue 3 proceeds.

pub mod origin;
