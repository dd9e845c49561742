//! Human-readable text of an inbound WhatsApp message. Pipedrive shows only text plus
//! attachments, so every message type is turned into words; nothing is dropped, unknown types
//! become a placeholder naming the type.

use serde_json::Value;

/// Longest quote of another message inside a rendering.
const QUOTE_CHARS: usize = 120;

/// A media object of a message, to be downloaded and attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    /// Meta's media id.
    pub media_id: String,
    /// MIME type Meta announced.
    pub mime_type: String,
    /// File name (documents).
    pub filename: Option<String>,
    /// The hash Meta put in the webhook (kept as opaque text).
    pub sha256: Option<String>,
}

/// The rendering of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Text shown in Pipedrive.
    pub body: String,
    /// Media to attach.
    pub media: Vec<MediaRef>,
}

/// Texts of other messages the rendering refers to, looked up by the caller.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quotes<'a> {
    /// The message this one replies to (`context.id`).
    pub reply_to: Option<&'a str>,
    /// The message a reaction, edit or revoke is about.
    pub target: Option<&'a str>,
}

/// The wamid of the message a reaction, edit or revoke refers to.
pub fn target_wamid(item: &Value) -> Option<&str> {
    match kind(item) {
        "reaction" => item["reaction"]["message_id"].as_str(),
        "edit" => item["edit"]["original_message_id"].as_str(),
        "revoke" => item["revoke"]["original_message_id"].as_str(),
        _ => None,
    }
}

/// The wamid a message replies to.
pub fn reply_wamid(item: &Value) -> Option<&str> {
    item["context"]["id"].as_str()
}

fn kind(item: &Value) -> &str {
    item["type"].as_str().unwrap_or("unknown")
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value[key].as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Shortens `text` for quoting, on a character boundary.
pub fn quote(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= QUOTE_CHARS {
        format!("“{flat}”")
    } else {
        let cut: String = flat.chars().take(QUOTE_CHARS).collect();
        format!("“{cut}…”")
    }
}

/// Renders a `messages[]` item.
pub fn render(item: &Value, quotes: Quotes<'_>) -> Rendered {
    let mut media = Vec::new();
    let mut lines = Vec::new();
    let context = &item["context"];
    if context["frequently_forwarded"].as_bool() == Some(true) {
        lines.push("↪️ Forwarded many times".to_string());
    } else if context["forwarded"].as_bool() == Some(true) {
        lines.push("↪️ Forwarded".to_string());
    }
    if reply_wamid(item).is_some() && kind(item) != "reaction" {
        lines.push(match quotes.reply_to {
            Some(q) => format!("↩️ Reply to {}", quote(q)),
            None => "↩️ Reply to an earlier message".to_string(),
        });
    }
    let main = body_of(item, quotes.target, &mut media);
    if !main.is_empty() {
        lines.push(main);
    }
    if let Some(referral) = referral(&item["referral"]) {
        lines.push(referral);
    }
    Rendered {
        body: lines.join("\n"),
        media,
    }
}

fn body_of(item: &Value, target: Option<&str>, media: &mut Vec<MediaRef>) -> String {
    let kind = kind(item);
    let object = &item[kind];
    match kind {
        "text" => text(object, "body").unwrap_or_default().to_string(),
        "image" | "video" | "audio" | "document" | "sticker" => media_body(kind, object, media),
        "location" => location(object),
        "contacts" => contacts(object),
        "interactive" => interactive(object),
        "button" => format!(
            "Tapped “{}”",
            text(object, "text")
                .or_else(|| text(object, "payload"))
                .unwrap_or("a button")
        ),
        "reaction" => reaction(object, target),
        "order" => order(object),
        "system" => text(object, "body")
            .map(str::to_string)
            .unwrap_or_else(|| format!("System notice: {}", text(object, "type").unwrap_or("unknown"))),
        "request_welcome" => "👋 Opened the chat".to_string(),
        "edit" => {
            let inner = body_of(&object["message"], None, media);
            match target {
                Some(old) => format!("✏️ Edited {} to: {}", quote(old), inner),
                None => format!("✏️ Edited a message to: {inner}"),
            }
        }
        "revoke" => match target {
            Some(old) => format!("🗑️ Deleted the message {}", quote(old)),
            None => "🗑️ Deleted a message".to_string(),
        },
        "unsupported" => {
            let what = text(object, "type")
                .or_else(|| item["errors"][0]["title"].as_str())
                .unwrap_or("unknown");
            format!(
                "⚠️ The customer sent a message WhatsApp does not support here ({what}); open WhatsApp to see it"
            )
        }
        other => format!("⚠️ Unsupported message type “{other}”; open WhatsApp to see it"),
    }
}

fn media_body(kind: &str, object: &Value, media: &mut Vec<MediaRef>) -> String {
    if let Some(media_id) = text(object, "id") {
        media.push(MediaRef {
            media_id: media_id.to_string(),
            mime_type: text(object, "mime_type")
                .unwrap_or(default_mime(kind))
                .to_string(),
            filename: text(object, "filename").map(str::to_string),
            sha256: text(object, "sha256").map(str::to_string),
        });
    }
    if let Some(caption) = text(object, "caption") {
        return caption.to_string();
    }
    match kind {
        "image" => "📷 Photo".to_string(),
        "video" => "🎥 Video".to_string(),
        "audio" if object["voice"].as_bool() == Some(true) => "🎤 Voice message".to_string(),
        "audio" => "🎵 Audio".to_string(),
        "sticker" => "Sticker".to_string(),
        _ => format!("📄 {}", text(object, "filename").unwrap_or("Document")),
    }
}

fn default_mime(kind: &str) -> &'static str {
    match kind {
        "image" => "image/jpeg",
        "video" => "video/mp4",
        "audio" => "audio/ogg",
        "sticker" => "image/webp",
        _ => "application/octet-stream",
    }
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str()?.trim().parse().ok())
}

fn location(object: &Value) -> String {
    let mut lines = vec!["📍 Location".to_string()];
    if let Some(name) = text(object, "name") {
        lines[0] = format!("📍 {name}");
    }
    if let Some(address) = text(object, "address") {
        lines.push(address.to_string());
    }
    if let (Some(lat), Some(lon)) = (number(&object["latitude"]), number(&object["longitude"])) {
        lines.push(format!("{lat:.6}, {lon:.6}"));
        lines.push(format!(
            "https://www.google.com/maps/search/?api=1&query={lat:.6},{lon:.6}"
        ));
    }
    if let Some(url) = text(object, "url") {
        lines.push(url.to_string());
    }
    lines.join("\n")
}

fn contacts(list: &Value) -> String {
    let cards: Vec<String> = list
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|card| {
            let name = text(&card["name"], "formatted_name")
                .or_else(|| text(&card["name"], "first_name"))
                .unwrap_or("(no name)");
            let mut lines = vec![format!("👤 Shared contact: {name}")];
            if let Some(org) = text(&card["org"], "company") {
                lines.push(format!("Company: {org}"));
            }
            for phone in card["phones"].as_array().map(Vec::as_slice).unwrap_or_default() {
                if let Some(p) = text(phone, "phone").or_else(|| text(phone, "wa_id")) {
                    lines.push(format!("Phone: {p}"));
                }
            }
            for email in card["emails"].as_array().map(Vec::as_slice).unwrap_or_default() {
                if let Some(e) = text(email, "email") {
                    lines.push(format!("Email: {e}"));
                }
            }
            lines.join("\n")
        })
        .collect();
    if cards.is_empty() {
        "👤 Shared a contact".to_string()
    } else {
        cards.join("\n\n")
    }
}

fn interactive(object: &Value) -> String {
    let kind = object["type"].as_str().unwrap_or("");
    let reply = &object[kind];
    match kind {
        "button_reply" => format!("Selected “{}”", text(reply, "title").unwrap_or("a button")),
        "list_reply" => match text(reply, "description") {
            Some(d) => format!("Selected “{}” ({d})", text(reply, "title").unwrap_or("an option")),
            None => format!("Selected “{}”", text(reply, "title").unwrap_or("an option")),
        },
        "nfm_reply" => {
            let mut line = format!("📝 Form reply: {}", text(reply, "body").unwrap_or("sent"));
            if let Some(json) = reply["response_json"].as_str() {
                line.push_str(&format!("\n{json}"));
            }
            line
        }
        "call_permission_reply" => format!(
            "📞 Call permission: {}",
            text(reply, "response").unwrap_or("answered")
        ),
        "" => "Interactive reply".to_string(),
        other => format!("Interactive reply ({other})"),
    }
}

fn reaction(object: &Value, target: Option<&str>) -> String {
    let about = target.map(quote).unwrap_or_else(|| "a message".to_string());
    match text(object, "emoji") {
        Some(emoji) => format!("Reacted {emoji} to: {about}"),
        None => format!("Removed a reaction from: {about}"),
    }
}

fn order(object: &Value) -> String {
    let items = object["product_items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut lines = vec![format!("🛒 Order with {} item(s)", items.len())];
    for item in items {
        lines.push(format!(
            "{} × {} at {} {}",
            item["quantity"].as_i64().unwrap_or(1),
            text(item, "product_retailer_id").unwrap_or("?"),
            number(&item["item_price"])
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into()),
            text(item, "currency").unwrap_or(""),
        ));
    }
    if let Some(note) = text(object, "text") {
        lines.push(note.to_string());
    }
    lines.join("\n")
}

fn referral(referral: &Value) -> Option<String> {
    if !referral.is_object() {
        return None;
    }
    let source = text(referral, "source_type").unwrap_or("ad");
    let mut line = format!("📣 Came from {source}");
    if let Some(headline) = text(referral, "headline") {
        line.push_str(&format!(": {headline}"));
    }
    if let Some(body) = text(referral, "body") {
        line.push_str(&format!(" — {body}"));
    }
    if let Some(url) = text(referral, "source_url") {
        line.push_str(&format!(" ({url})"));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(item: Value) -> String {
        render(&item, Quotes::default()).body
    }

    #[test]
    fn text_and_media_with_captions_and_filenames() {
        assert_eq!(body(json!({"type":"text","text":{"body":"Hi"}})), "Hi");
        let image = render(
            &json!({"type":"image","image":{"id":"m1","mime_type":"image/png","sha256":"x","caption":"broken"}}),
            Quotes::default(),
        );
        assert_eq!(image.body, "broken");
        assert_eq!(image.media[0].media_id, "m1");
        assert_eq!(image.media[0].mime_type, "image/png");
        assert_eq!(
            body(
                json!({"type":"document","document":{"id":"d","mime_type":"application/pdf","filename":"a.pdf"}})
            ),
            "📄 a.pdf"
        );
        assert_eq!(
            body(json!({"type":"audio","audio":{"id":"a","voice":true}})),
            "🎤 Voice message"
        );
        assert_eq!(body(json!({"type":"sticker","sticker":{"id":"s"}})), "Sticker");
    }

    #[test]
    fn location_contacts_and_interactive_replies() {
        let loc = body(
            json!({"type":"location","location":{"latitude":-23.5614,"longitude":"-46.6559","name":"Shop","address":"Av. Paulista"}}),
        );
        assert!(
            loc.starts_with("📍 Shop\nAv. Paulista\n-23.561400, -46.655900\nhttps://www.google.com/maps/"),
            "{loc}"
        );
        let card = body(
            json!({"type":"contacts","contacts":[{"name":{"formatted_name":"Bruno"},"phones":[{"phone":"+55 11"}],"emails":[{"email":"b@x.io"}]}]}),
        );
        assert_eq!(card, "👤 Shared contact: Bruno\nPhone: +55 11\nEmail: b@x.io");
        assert_eq!(
            body(
                json!({"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"a","title":"Accept"}}})
            ),
            "Selected “Accept”"
        );
        assert_eq!(
            body(json!({"type":"button","button":{"text":"Call me back","payload":"CB"}})),
            "Tapped “Call me back”"
        );
    }

    #[test]
    fn reactions_replies_edits_and_revokes_quote_their_target() {
        let target = Quotes {
            target: Some("Is the offer valid?"),
            reply_to: None,
        };
        let reacted = render(
            &json!({"type":"reaction","reaction":{"message_id":"w","emoji":"👍"}}),
            target,
        );
        assert_eq!(reacted.body, "Reacted 👍 to: “Is the offer valid?”");
        let removed = render(
            &json!({"type":"reaction","reaction":{"message_id":"w","emoji":""}}),
            target,
        );
        assert_eq!(removed.body, "Removed a reaction from: “Is the offer valid?”");
        let reply = render(
            &json!({"type":"text","text":{"body":"yes"},"context":{"id":"w0"}}),
            Quotes {
                reply_to: Some("Friday?"),
                target: None,
            },
        );
        assert_eq!(reply.body, "↩️ Reply to “Friday?”\nyes");
        let edit = render(
            &json!({"type":"edit","edit":{"original_message_id":"w","message":{"type":"text","text":{"body":"new"}}}}),
            target,
        );
        assert_eq!(edit.body, "✏️ Edited “Is the offer valid?” to: new");
        assert_eq!(
            render(
                &json!({"type":"revoke","revoke":{"original_message_id":"w"}}),
                target
            )
            .body,
            "🗑️ Deleted the message “Is the offer valid?”"
        );
    }

    #[test]
    fn unknown_and_unsupported_types_become_placeholders() {
        assert!(body(json!({"type":"poll_v9"})).contains("“poll_v9”"));
        assert!(body(json!({"type":"unsupported","unsupported":{"type":"poll"}})).contains("(poll)"));
        assert!(body(json!({})).contains("“unknown”"));
    }

    #[test]
    fn referral_and_forwarding_are_shown() {
        let b = body(
            json!({"type":"text","text":{"body":"hi"},"context":{"forwarded":true},
            "referral":{"source_type":"ad","headline":"Spring sale","source_url":"https://fb.me/x"}}),
        );
        assert_eq!(
            b,
            "↪️ Forwarded\nhi\n📣 Came from ad: Spring sale (https://fb.me/x)"
        );
    }

    #[test]
    fn quotes_are_flattened_and_shortened() {
        let long = "word ".repeat(60);
        let q = quote(&long);
        assert!(q.ends_with("…”") && q.chars().count() <= QUOTE_CHARS + 3);
        assert_eq!(quote("a\n  b"), "“a b”");
    }
}
