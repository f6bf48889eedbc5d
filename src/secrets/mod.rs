//! Secrets: stored encrypted at rest ([`store`]), injected into a sandbox only when a request
//! names them, and redacted from everything stockade returns, streams or records ([`redact`]).
//! docs/secrets.md describes them in full.

pub mod redact;
pub mod store;

pub use redact::{RedactingSink, Redactor};
pub use store::{SecretError, SecretInfo, Secrets};
