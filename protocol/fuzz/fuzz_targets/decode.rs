//! Fuzzes `decode` with arbitrary bytes on every kind of topic.
//!
//! Input layout: the first byte picks a topic (one per message kind, or, for the last
//! choice, the text up to the first newline of the rest is the topic); the rest is the
//! payload. Besides "never panics", every accepted message must survive a round trip:
//! `decode(encode(m)) == m`.

#![no_main]

use alarmnet_protocol::{MAX_PAYLOAD_BYTES, Prefix, decode};
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 8] = [
    "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/birth",
    "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/state",
    "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/hb",
    "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/fault",
    "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/test",
    "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd",
    "alarmnet/v1/$collector/c1/state",
    "alarmnet/v1/$alerts/lanzhou/lz-chengguan/lz-cg-s001/node_down",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let selector = usize::from(selector) % (TOPICS.len() + 1);
    let (topic, payload) = match TOPICS.get(selector) {
        Some(topic) => (*topic, rest),
        None => {
            let newline = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let Ok(topic) = std::str::from_utf8(&rest[..newline]) else {
                return;
            };
            (topic, rest.get(newline + 1..).unwrap_or_default())
        }
    };
    let prefix = Prefix::default();
    let Ok(envelope) = decode(&prefix, topic, payload) else {
        return;
    };
    let (topic_again, payload_again) = envelope.encode(&prefix);
    assert_eq!(topic_again, topic, "the topic formats back to itself");
    // Canonical JSON can be longer than the input ("1E2" becomes "100.0"): past the size
    // limit a re-encoded message is rightly rejected.
    if payload_again.len() <= MAX_PAYLOAD_BYTES {
        let again =
            decode(&prefix, &topic_again, &payload_again).expect("an encoded message decodes");
        assert_eq!(again, envelope, "decode(encode(m)) == m");
    }
});
