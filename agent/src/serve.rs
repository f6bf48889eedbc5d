//! Serving: one connection, one command, one at a time.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use stockade_proto::{frame, mac, Hello, Op, Request, MAC_LEN, NONCE_LEN, PROTOCOL};

use crate::launch::read_frame;
use crate::run::Held;
use crate::{files, run, sys};

/// The host sends its request right after the hello; a connection that does not is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn serve(held: Held, listener: UnixListener) -> ! {
    let limits = sys::rlimits();
    loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                // Any process of the sandbox user may lower this one's resource limits
                // (prlimit's check is by uid); an agent so hobbled would fail in ways that look
                // like the command's. It refuses (nothing runs) and leaves for a fresh one.
                if let Some(which) = sys::lowered(&limits) {
                    let _ = refuse(
                        &mut conn,
                        &format!("the agent's resource limit {which} was lowered from inside the sandbox"),
                    );
                    std::process::exit(1);
                }
                if let Err(e) = handle(&held, conn) {
                    // stderr is /dev/null once serving; kept for a debugging run by hand.
                    eprintln!("stockade-agent: connection ended: {e}");
                }
            }
            // EMFILE, ENOMEM and the like: wait and try again rather than exit and leave the
            // session without an agent.
            Err(_) => sys::sleep(Duration::from_millis(50)),
        }
    }
}

fn refuse(conn: &mut UnixStream, why: &str) -> std::io::Result<()> {
    conn.write_all(&frame::encode(frame::REFUSED, why.as_bytes()))
}

fn handle(held: &Held, mut conn: UnixStream) -> std::io::Result<()> {
    let key = &held.key;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut nonce = [0u8; NONCE_LEN];
    sys::random(&mut nonce)?;
    let hello = Hello {
        protocol: PROTOCOL,
        nonce,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    conn.write_all(&frame::encode(frame::HELLO, &hello.encode()))?;
    let (tag, payload) = read_frame(&mut conn)?;
    if tag != frame::REQUEST || payload.len() < MAC_LEN {
        return refuse(&mut conn, "expected a request");
    }
    let (tag, encoded) = payload.split_at(MAC_LEN);
    // The MAC is checked before a single field is parsed.
    if !mac::verify_request(key, encoded, tag) {
        return refuse(&mut conn, "the request is not authenticated");
    }
    let request = match Request::decode(encoded) {
        Ok(r) => r,
        Err(e) => return refuse(&mut conn, &format!("bad request: {e}")),
    };
    if request.protocol != PROTOCOL {
        return refuse(&mut conn, "protocol version mismatch");
    }
    if request.agent_nonce != nonce {
        return refuse(&mut conn, "the request answers another connection");
    }
    match request.op {
        Op::Run => run::run(held, conn, encoded, &request),
        Op::ReadFile => files::read(held, conn, encoded, &request),
        Op::WriteFile => files::write(held, conn, encoded, &request),
    }
}
