//! Frames: `[tag: u8][len: u32 big-endian][payload: len bytes]`, payload at most [`MAX_FRAME`].

/// Largest payload either side accepts; a larger length ends the connection.
pub const MAX_FRAME: usize = 1 << 20;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;
/// How often an agent with nothing else to send says it is alive.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

// Agent -> host.
/// Sent when the agent accepts a connection: [`crate::Hello`].
pub const HELLO: u8 = b'h';
/// The request verified; the command starts now. Before it the host knows nothing ran.
pub const ACCEPTED: u8 = b'a';
pub const STDOUT: u8 = b'o';
pub const STDERR: u8 = b'e';
/// [`crate::Exit`] followed by its MAC.
pub const EXIT: u8 = b'x';
/// The agent refused the request (UTF-8 reason); nothing ran.
pub const REFUSED: u8 = b'!';
/// Sent at least every [`HEARTBEAT_EVERY`] while a command runs: a silent agent is a stopped or
/// wedged one.
pub const HEARTBEAT: u8 = b'k';
/// The agent saw the host's stop (the half-closed connection) and is ending the command.
pub const STOPPING: u8 = b's';
/// At launch: the MAC over the host's challenge, the protocol version and the agent's pid.
pub const PROOF: u8 = b'p';
/// At launch: the agent holds the listener the host passed.
pub const HOLDING: u8 = b'r';

// Host -> agent.
/// At launch: the host's random challenge.
pub const CHALLENGE: u8 = b'c';
/// The MAC followed by the encoded [`crate::Request`].
pub const REQUEST: u8 = b'q';
/// Bytes for the command's stdin.
pub const STDIN: u8 = b'i';
/// End of the command's stdin.
pub const STDIN_EOF: u8 = b'I';

/// A frame ready to send.
pub fn encode(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(tag);
    // Callers never build a payload over MAX_FRAME (1 MiB), which fits in u32.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads a header: the tag and the payload length, or `None` when the length is over the limit.
pub fn parse_header(header: [u8; HEADER_LEN]) -> Option<(u8, usize)> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (len <= MAX_FRAME).then_some((header[0], len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_caps_the_length() {
        let f = encode(STDOUT, b"hello");
        let header: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().unwrap();
        assert_eq!(parse_header(header), Some((STDOUT, 5)));
        assert_eq!(&f[HEADER_LEN..], b"hello");
        let mut big = [EXIT, 0, 0, 0, 0];
        big[1..].copy_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert_eq!(parse_header(big), None);
    }
}
