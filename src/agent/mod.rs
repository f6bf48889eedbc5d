//! The session agent: a small process inside a warm session container that runs commands
//! without a `docker exec` round trip through the runtime.
//!
//! The agent is this same binary (`stockade __agent`), bind-mounted read-only into session
//! containers of the base image (built from the same host, so its libraries match). It runs as
//! the sandbox user under the container's seccomp filter, capabilities and cgroup limits, exactly
//! like an exec'd command, and listens on a unix socket in a per-session host directory that is
//! bind-mounted into the container.
//!
//! The sandbox can kill the agent or put a socket of its own in that directory, so nothing the
//! socket says is trusted without proof: the agent holds a per-session secret that never exists
//! inside the container's filesystem, argv or environment (it arrives on the agent's stdin, and
//! the agent makes itself non-dumpable first, so /proc cannot reveal it), and every result
//! carries an HMAC over the request nonce, the exit status and digests of both output streams.
//! A result that fails the check is an error; a missing or dead agent means stockade falls back
//! to `docker exec` and starts a new agent.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the per-session socket directory is mounted inside the container.
pub const AGENT_DIR_IN_CONTAINER: &str = "/run/stockade";
/// Where the agent binary is mounted inside the container.
pub const AGENT_BIN_IN_CONTAINER: &str = "/run/stockade-agent/stockade";
pub const SOCKET_NAME: &str = "agent.sock";
/// The line the agent prints on stdout once it listens.
pub const READY: &str = "stockade-agent-ready";

/// Frame tags on the agent connection.
pub const TAG_STDOUT: u8 = b'o';
pub const TAG_STDERR: u8 = b'e';
pub const TAG_EXIT: u8 = b'x';
/// Sent before the command is started: without it the host knows nothing ran and may retry.
pub const TAG_ACCEPTED: u8 = b'a';
/// Largest frame payload either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// One command for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub nonce: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub timeout_ms: u64,
    pub grace_ms: u64,
}

/// How the command ended, with the agent's proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub mac: String,
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The MAC over everything the host relies on.
pub fn result_mac(
    secret: &[u8],
    nonce: &str,
    exit_code: Option<i64>,
    timed_out: bool,
    stdout_sha: &[u8],
    stderr_sha: &[u8],
) -> String {
    let message = format!(
        "{nonce}\n{}\n{timed_out}\n{}\n{}",
        exit_code.map_or("none".to_string(), |c| c.to_string()),
        hex::encode(stdout_sha),
        hex::encode(stderr_sha)
    );
    hex::encode(hmac_sha256(secret, message.as_bytes()))
}

/// Constant-time comparison of two hex MACs.
pub fn mac_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn mac_binds_every_field() {
        let base = result_mac(b"k", "n", Some(0), false, b"o", b"e");
        assert_ne!(base, result_mac(b"k2", "n", Some(0), false, b"o", b"e"));
        assert_ne!(base, result_mac(b"k", "n2", Some(0), false, b"o", b"e"));
        assert_ne!(base, result_mac(b"k", "n", Some(1), false, b"o", b"e"));
        assert_ne!(base, result_mac(b"k", "n", None, false, b"o", b"e"));
        assert_ne!(base, result_mac(b"k", "n", Some(0), true, b"o", b"e"));
        assert_ne!(base, result_mac(b"k", "n", Some(0), false, b"x", b"e"));
        assert_ne!(base, result_mac(b"k", "n", Some(0), false, b"o", b"x"));
        assert!(mac_eq(&base, &base.clone()));
        assert!(!mac_eq(&base, &base[1..]));
    }
}
