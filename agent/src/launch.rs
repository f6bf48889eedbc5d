//! Start-up: the key from stdin, then the listener from the host.
//!
//! The host starts the agent with a `docker exec` whose stdin carries the sandbox's key (one
//! hex line) and whose argument names a launch socket the host listens on, in a directory the
//! sandbox sees read-only. The agent proves it holds the key (a MAC over the host's challenge);
//! the host then passes it, over that connection, the listening socket the host will connect to
//! for every command. That listener's path lives only in the host's private state directory:
//! nothing in the sandbox can reach it, replace it or stand in front of it. The agent is the
//! only process that holds the listener, and it is non-dumpable from execve (its binary is
//! execute-only) so no other process can take it, or the key, out of it through /proc.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use stockade_proto::{frame, mac, CHALLENGE_LEN, KEY_LEN, PROTOCOL};

use crate::sys;

/// The whole launch exchange is bounded.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The key line: 64 hex digits and a newline; anything longer is refused.
const MAX_KEY_LINE: u64 = 128;

pub struct Launched {
    pub key: [u8; KEY_LEN],
    pub listener: UnixListener,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn read_key() -> std::io::Result<[u8; KEY_LEN]> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_KEY_LINE)
        .read_line(&mut line)?;
    let hex = line.trim();
    if hex.len() != KEY_LEN * 2 {
        return Err(invalid("the key is not 64 hex digits"));
    }
    let mut key = [0u8; KEY_LEN];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| invalid("the key is not hex"))?;
    }
    Ok(key)
}

pub fn read_frame(stream: &mut UnixStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; frame::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let (tag, len) = frame::parse_header(header).ok_or_else(|| invalid("frame too long"))?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((tag, payload))
}

pub fn launch(socket: &Path) -> std::io::Result<Launched> {
    let key = read_key()?;
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(LAUNCH_TIMEOUT))?;
    conn.set_write_timeout(Some(LAUNCH_TIMEOUT))?;
    let (tag, challenge) = read_frame(&mut conn)?;
    let challenge: [u8; CHALLENGE_LEN] = match (tag, challenge.try_into()) {
        (frame::CHALLENGE, Ok(c)) => c,
        _ => return Err(invalid("expected the host's challenge")),
    };
    let mut proof = mac::launch(&key, &challenge, PROTOCOL).to_vec();
    proof.extend_from_slice(&PROTOCOL.to_be_bytes());
    conn.write_all(&frame::encode(frame::PROOF, &proof))?;
    let listener = sys::recv_fd(conn.as_raw_fd())?;
    let listener = UnixListener::from(listener);
    conn.write_all(&frame::encode(frame::HOLDING, b""))?;
    Ok(Launched { key, listener })
}
