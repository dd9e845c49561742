//! `whatsapp::render` over arbitrary message items: it never panics, always says something,
//! keeps text verbatim and finds every media object.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use pipedrive_whatsapp::whatsapp::render::{self, Quotes};

const KINDS: &[&str] = &[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "request_welcome",
    "edit",
    "revoke",
    "unsupported",
    "poll",
    "",
];
const MEDIA: &[&str] = &["image", "video", "audio", "document", "sticker"];
const KEYS: &[&str] = &[
    "type",
    "text",
    "body",
    "id",
    "mime_type",
    "caption",
    "filename",
    "voice",
    "latitude",
    "longitude",
    "name",
    "address",
    "url",
    "formatted_name",
    "phones",
    "emails",
    "phone",
    "button_reply",
    "list_reply",
    "nfm_reply",
    "title",
    "description",
    "payload",
    "emoji",
    "message_id",
    "message",
    "original_message_id",
    "product_items",
    "quantity",
    "item_price",
    "currency",
    "response_json",
    "forwarded",
    "frequently_forwarded",
    "source_type",
    "headline",
    "source_url",
];

/// Any JSON value, with keys the renderer looks for.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".{0,30}".prop_map(Value::String),
        prop::sample::select(KINDS).prop_map(|k| Value::String(k.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), ".{0,6}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A message item: a `type`, an object under that type, maybe context and referral.
fn message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(KINDS),
        json_value(),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(kind, object, context, referral)| {
            let mut item = Map::new();
            item.insert("type".into(), json!(kind));
            item.insert(kind.to_string(), object);
            if let Some(context) = context {
                item.insert("context".into(), context);
            }
            if let Some(referral) = referral {
                item.insert("referral".into(), referral);
            }
            Value::Object(item)
        })
}

proptest! {
    #[test]
    fn any_item_renders_without_panicking(item in json_value(), reply in prop::option::of(".{0,200}"), target in prop::option::of(".{0,200}")) {
        let quotes = Quotes { reply_to: reply.as_deref(), target: target.as_deref() };
        let _ = render::render(&item, quotes);
        let _ = render::target_wamid(&item);
        let _ = render::reply_wamid(&item);
    }

    #[test]
    fn every_message_but_an_empty_text_says_something(item in message()) {
        let rendered = render::render(&item, Quotes::default());
        if item["type"] != "text" {
            prop_assert!(!rendered.body.trim().is_empty(), "{item}");
        }
        for media in &rendered.media {
            prop_assert!(!media.media_id.trim().is_empty());
            prop_assert!(!media.mime_type.is_empty());
        }
    }

    #[test]
    fn text_is_shown_verbatim(body in "\\PC{1,300}") {
        prop_assume!(!body.trim().is_empty());
        let rendered = render::render(&json!({"type": "text", "text": {"body": body}}), Quotes::default());
        prop_assert_eq!(rendered.body, body.trim());
        prop_assert!(rendered.media.is_empty());
    }

    #[test]
    fn a_media_message_attaches_its_media(kind in prop::sample::select(MEDIA), id in "[A-Za-z0-9]{1,20}", caption in prop::option::of("\\PC{0,80}"), mime in prop::option::of("[a-z]{1,8}/[a-z0-9.+-]{1,12}")) {
        let mut object = json!({"id": id});
        if let Some(caption) = &caption { object["caption"] = json!(caption); }
        if let Some(mime) = &mime { object["mime_type"] = json!(mime); }
        let rendered = render::render(&json!({"type": kind, kind: object}), Quotes::default());
        prop_assert_eq!(rendered.media.len(), 1);
        prop_assert_eq!(&rendered.media[0].media_id, &id);
        if let Some(mime) = mime { prop_assert_eq!(&rendered.media[0].mime_type, &mime); }
        match caption.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(caption) => prop_assert_eq!(rendered.body, caption),
            None => prop_assert!(!rendered.body.is_empty()),
        }
    }

    #[test]
    fn quotes_are_one_short_line_keeping_the_start(text in "\\PC{0,400}") {
        let quoted = render::quote(&text);
        prop_assert!(!quoted.contains('\n'));
        prop_assert!(quoted.chars().count() <= 123);
        prop_assert!(quoted.starts_with('“') && quoted.ends_with('”'));
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let start: String = flat.chars().take(100).collect();
        prop_assert!(quoted.contains(&start));
    }
}
