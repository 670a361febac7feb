//! Any bytes as a broker reply (RESP2 or RESP3, as they would come off the wire): every
//! decoder of `broker::parse` returns entries or an error describing the shape; none
//! panics.

#![no_main]

use cannon_host::broker::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = redis::parse_redis_value(data) else {
        return;
    };
    let _ = parse::read_reply(&value);
    let _ = parse::autoclaim_reply(&value);
    let _ = parse::pending_reply(&value);
    let _ = parse::entries(&value);
    if let Ok(Some(decoded)) = parse::fields(&value) {
        assert!(decoded.fields.len() <= data.len(), "no field out of nothing");
    }
});
