//! `pipedrive::wire::message` over arbitrary stored messages: Pipedrive always gets the id,
//! the contract's status and time format, every stored file as a link that verifies, and a
//! word about what could not be fetched or delivered.

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use pipedrive_whatsapp::config::{PublicUrl, SecretKey};
use pipedrive_whatsapp::crypto::Keys;
use pipedrive_whatsapp::pipedrive::wire::{self, Links};
use pipedrive_whatsapp::store::attachments::{Attachment, AttachmentStatus};
use pipedrive_whatsapp::store::messages::{Direction, MessageRow, MessageStatus};

fn status() -> impl Strategy<Value = MessageStatus> {
    prop::sample::select(vec![
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ])
}

/// Any time chrono can hold, to the microsecond.
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp_micros(),
        DateTime::<Utc>::MAX_UTC.timestamp_micros(),
    );
    prop_oneof![
        (min..=max).prop_map(|m| DateTime::from_timestamp_micros(m).expect("in range")),
        (0i64..4_102_444_800).prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range")),
        Just(DateTime::<Utc>::MAX_UTC),
    ]
}

fn row() -> impl Strategy<Value = MessageRow> {
    (
        any::<u128>(),
        prop::bool::ANY,
        "\\PC{0,40}",
        "\\PC{0,200}",
        status(),
        prop::option::of(any::<i32>()),
        prop::option::of("\\PC{0,30}"),
        prop::option::of("\\PC{0,30}"),
        time(),
    )
        .prop_map(
            |(id, inbound, sender_id, body, status, error_code, error_title, error_detail, sent_at)| {
                MessageRow {
                    id: Uuid::from_u128(id),
                    conversation_id: Uuid::nil(),
                    channel_id: Uuid::nil(),
                    direction: if inbound {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    },
                    sender_id,
                    kind: "text".into(),
                    body,
                    status,
                    error_code,
                    error_title,
                    error_detail,
                    sent_at,
                    has_files: false,
                }
            },
        )
}

fn attachment() -> impl Strategy<Value = Attachment> {
    (
        any::<u128>(),
        prop::sample::select(vec![
            AttachmentStatus::Pending,
            AttachmentStatus::Stored,
            AttachmentStatus::Failed,
        ]),
        prop::sample::select(vec![
            "image/jpeg",
            "application/pdf",
            "audio/ogg",
            "video/mp4",
            "text/plain",
        ]),
        prop::option::of("\\PC{0,20}"),
        prop::option::of(0i64..1 << 40),
    )
        .prop_map(|(id, status, mime, filename, size)| Attachment {
            id: Uuid::from_u128(id),
            message_id: Uuid::nil(),
            position: 0,
            media_id: None,
            mime_type: mime.into(),
            filename,
            size_bytes: size,
            sha256: None,
            status,
            error: None,
            created_at: DateTime::UNIX_EPOCH,
        })
}

/// The `exp` and `sig` of a signed link.
fn link_parts(url: &str) -> (String, i64, String) {
    let url = url::Url::parse(url).expect("an absolute URL");
    let field = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .expect("signed")
    };
    (
        url.path().to_string(),
        field("exp").parse().expect("a number"),
        field("sig"),
    )
}

proptest! {
    #[test]
    fn pipedrive_gets_the_contract_shape_of_any_message(row in row(), files in prop::collection::vec(attachment(), 0..5)) {
        let keys = Keys::new(&SecretKey::parse("d2lyZS1wcm9wZXJ0eS10ZXN0cy0zMi1ieXRlcy1rZXk=").unwrap());
        let public_url = PublicUrl::parse("https://wa.example.com").unwrap();
        let refs: Vec<&Attachment> = files.iter().collect();
        let message = wire::message(row.clone(), &refs, Links { keys: &keys, public_url: &public_url });

        prop_assert_eq!(&message.id, &row.id.to_string());
        prop_assert_eq!(&message.sender_id, &row.sender_id);
        prop_assert_eq!(message.status.as_str(), row.status.for_pipedrive());
        prop_assert_eq!(&message.created_at, &wire::timestamp(row.sent_at));
        let window = row.sent_at.checked_add_signed(TimeDelta::hours(24));
        match (row.direction, window) {
            (Direction::Inbound, Some(end)) => prop_assert_eq!(message.reply_by, Some(wire::timestamp(end))),
            _ => prop_assert_eq!(message.reply_by, None),
        }
        prop_assert!(message.message.starts_with(&row.body));

        let stored: Vec<&Attachment> = files.iter().filter(|a| a.status == AttachmentStatus::Stored).collect();
        prop_assert_eq!(message.attachments.len(), stored.len());
        for (sent, file) in message.attachments.iter().zip(&stored) {
            prop_assert_eq!(&sent.id, &file.id.to_string());
            prop_assert_eq!(&sent.mime_type, &file.mime_type);
            prop_assert_eq!(sent.preview_url.is_some(), file.mime_type.starts_with("image/"));
            let (path, exp, sig) = link_parts(&sent.url);
            prop_assert_eq!(&path, &format!("/media/{}", file.id));
            prop_assert!(keys.verify_link(&path, exp, &sig, Utc::now().timestamp()).is_ok());
        }
        let failed_files = files.iter().any(|a| a.status == AttachmentStatus::Failed);
        prop_assert_eq!(message.message.contains("could not be fetched"), failed_files);
        if row.status == MessageStatus::Failed {
            prop_assert!(message.message.contains("Not delivered"));
        }
    }
}

proptest! {
    #[test]
    fn times_are_written_as_the_formatting_machinery_writes_them(at in time()) {
        let expected = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute()
        );
        prop_assert_eq!(wire::timestamp(at), expected);
    }
}
