//! The protocol between stockade on the host and `stockade-agent` inside a sandbox.
//!
//! One connection runs one command. Every message is a frame: a tag byte, a 4-byte big-endian
//! length, the payload ([`frame`]). The agent opens with a [`Hello`] carrying a fresh nonce;
//! the host answers with a [`Request`] and its HMAC-SHA256 under the sandbox's key, which binds
//! the command, argv, environment, working directory, timeout, stdin flag and both nonces; the
//! agent refuses a request whose MAC does not verify or whose nonce is not the one it just
//! sent, so a rewritten or replayed request never runs. The agent's [`Exit`] is MACed under the
//! same key together with the SHA-256 of the request, so a result cannot be moved to another
//! request, and it carries the digests of both output streams and of stdin as the agent saw
//! them, so a frame dropped or added on the way is caught too.
//!
//! The encodings are fixed-layout binary ([`codec`]): lengths are checked before anything is
//! allocated, and the decoder never panics on any input (see the property tests and the
//! `wire` fuzz target).

pub mod cgroup;
pub mod codec;
pub mod frame;
pub mod mac;
pub mod message;
pub mod setup;

pub use cgroup::Counters;
pub use codec::DecodeError;
pub use message::{Exit, Hello, KillReport, Op, Request, Status, StreamDigest};

/// Protocol version; both sides refuse any other.
pub const PROTOCOL: u16 = 3;
/// Length of the per-sandbox key (HMAC-SHA256 key).
pub const KEY_LEN: usize = 32;
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 16;
/// Length of the host's launch challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Length of a MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// The line the agent prints on stdout once it holds its listener and serves.
pub const READY: &str = "stockade-agent-ready";
/// Exit status of `stockade-agent kill` when processes survived KILL.
pub const KILL_INCOMPLETE: i32 = 3;
