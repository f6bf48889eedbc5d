//! HMAC-SHA256 (RustCrypto `hmac`) over domain-separated messages: a MAC made for one purpose
//! (launch proof, request, result) never verifies as another.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{CHALLENGE_LEN, MAC_LEN};

type HmacSha256 = Hmac<Sha256>;

const LAUNCH: &[u8] = b"stockade-agent/launch/v2\0";
const REQUEST: &[u8] = b"stockade-agent/request/v2\0";
const RESULT: &[u8] = b"stockade-agent/result/v2\0";

fn mac(key: &[u8], context: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(context);
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().into()
}

fn verify(key: &[u8], context: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(context);
    for part in parts {
        m.update(part);
    }
    // Constant time (subtle, inside `hmac`).
    m.verify_slice(tag).is_ok()
}

/// The agent's proof at launch that it holds the key: over the host's challenge and the
/// protocol version it speaks.
pub fn launch(key: &[u8], challenge: &[u8; CHALLENGE_LEN], protocol: u16) -> [u8; MAC_LEN] {
    mac(key, LAUNCH, &[challenge, &protocol.to_be_bytes()])
}

pub fn verify_launch(
    key: &[u8],
    challenge: &[u8; CHALLENGE_LEN],
    protocol: u16,
    tag: &[u8],
) -> bool {
    verify(key, LAUNCH, &[challenge, &protocol.to_be_bytes()], tag)
}

/// The host's MAC over an encoded request.
pub fn request(key: &[u8], encoded: &[u8]) -> [u8; MAC_LEN] {
    mac(key, REQUEST, &[encoded])
}

pub fn verify_request(key: &[u8], encoded: &[u8], tag: &[u8]) -> bool {
    verify(key, REQUEST, &[encoded], tag)
}

/// The agent's MAC over an encoded exit, bound to the request it answers.
pub fn result(key: &[u8], request: &[u8], exit: &[u8]) -> [u8; MAC_LEN] {
    mac(key, RESULT, &[&Sha256::digest(request), exit])
}

pub fn verify_result(key: &[u8], request: &[u8], exit: &[u8], tag: &[u8]) -> bool {
    verify(key, RESULT, &[&Sha256::digest(request), exit], tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let tag: [u8; 32] = m.finalize().into_bytes().into();
        assert_eq!(
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn macs_are_bound_to_their_purpose_key_and_content() {
        let key = [7u8; 32];
        let req = request(&key, b"req");
        assert!(verify_request(&key, b"req", &req));
        assert!(!verify_request(&key, b"req2", &req));
        assert!(!verify_request(&[8u8; 32], b"req", &req));
        // The same bytes under another purpose never verify.
        let res = result(&key, b"req", b"exit");
        assert!(verify_result(&key, b"req", b"exit", &res));
        assert!(!verify_result(&key, b"other request", b"exit", &res));
        assert!(!verify_request(&key, b"exit", &res));
        let challenge = [1u8; 32];
        let proof = launch(&key, &challenge, 2);
        assert!(verify_launch(&key, &challenge, 2, &proof));
        assert!(!verify_launch(&key, &challenge, 3, &proof));
        assert!(!verify_launch(&key, &[2u8; 32], 2, &proof));
        assert!(!verify_launch(&key, &challenge, 2, &proof[..31]));
    }
}
