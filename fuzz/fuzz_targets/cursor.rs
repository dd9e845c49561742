//! Pagination cursors as Pipedrive hands them back: never a panic, and whatever is accepted
//! round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipedrive_whatsapp::pipedrive::cursor::{self, Kind};
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scope = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
    for kind in [Kind::Conversations, Kind::Messages] {
        if let Ok(cursor) = cursor::decode(kind, scope, text) {
            assert_eq!(
                cursor::decode(kind, scope, &cursor::encode(kind, scope, cursor)),
                Ok(cursor)
            );
        }
    }
});
