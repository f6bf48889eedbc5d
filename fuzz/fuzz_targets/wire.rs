//! The agent protocol's decoders and frame header on arbitrary bytes: no panic, no allocation
//! beyond the input's own size, and whatever decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockade_proto::{frame, mac, Exit, Hello, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(e) = Exit::decode(data) {
        assert_eq!(e.encode(), data);
    }
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(h.encode(), data);
    }
    if data.len() >= frame::HEADER_LEN {
        let mut header = [0u8; frame::HEADER_LEN];
        header.copy_from_slice(&data[..frame::HEADER_LEN]);
        if let Some((_, len)) = frame::parse_header(header) {
            assert!(len <= frame::MAX_FRAME);
        }
    }
    // A forged MAC never verifies under a key the forger does not have.
    let (tag, body) = data.split_at(data.len().min(32));
    assert!(!mac::verify_request(&[0x5a; 32], body, tag) || tag == mac::request(&[0x5a; 32], body));
});
