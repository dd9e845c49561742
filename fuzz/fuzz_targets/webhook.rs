//! A webhook as Meta posts it: the signature header (first line of the input) checked over the
//! body (the rest), then the body read and every message rendered the way ingest does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipedrive_whatsapp::whatsapp::payload::{MessageHead, MessagesValue, Notification, Status};
use pipedrive_whatsapp::whatsapp::render::{self, Quotes};
use pipedrive_whatsapp::whatsapp::signature;

const APP_SECRET: &[u8] = b"fuzz-app-secret";

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let signed = signature::sign(APP_SECRET, body);
    assert!(signature::verify(APP_SECRET, Some(signed.as_bytes()), body).is_ok());
    if signature::verify(APP_SECRET, Some(header), body).is_ok() {
        assert!(
            header.eq_ignore_ascii_case(signed.as_bytes()),
            "only the body's own HMAC is accepted"
        );
    }

    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        return;
    }
    let Ok(notification) = serde_json::from_slice::<Notification>(body) else {
        return;
    };
    let quotes = Quotes {
        reply_to: Some("an earlier message"),
        target: Some("the message reacted to"),
    };
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        let Ok(value) = serde_json::from_value::<MessagesValue>(change.value.clone()) else {
            continue;
        };
        for item in value.messages.iter().chain(&value.message_echoes) {
            let _ = serde_json::from_value::<MessageHead>(item.clone());
            let _ = render::target_wamid(item);
            let _ = render::reply_wamid(item);
            let rendered = render::render(item, quotes);
            let _ = render::quote(&rendered.body);
            let _ = render::render(&item["edit"]["message"], Quotes::default());
        }
        for status in &value.statuses {
            let _ = serde_json::from_value::<Status>(status.clone());
        }
    }
});
