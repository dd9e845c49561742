//! The webhook body Meta posts, as far as the bridge reads it.
//!
//! Every field is optional or defaulted: Meta adds fields and types over time, and an event we
//! cannot fully read must still be stored (its raw JSON is kept) rather than rejected.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The top-level notification.
#[derive(Debug, Deserialize)]
pub struct Notification {
    /// Always `whatsapp_business_account` for WhatsApp.
    #[serde(default)]
    pub object: String,
    /// One per WhatsApp Business Account.
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// Changes of one WhatsApp Business Account.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// The WABA id.
    #[serde(default)]
    pub id: String,
    /// What changed.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change: `field` says what kind, `value` carries it.
#[derive(Debug, Deserialize)]
pub struct Change {
    /// `messages`, `smb_message_echoes`, `message_template_status_update`, …
    #[serde(default)]
    pub field: String,
    /// The change itself; read as [`MessagesValue`] for message fields.
    #[serde(default)]
    pub value: Value,
}

/// The value of a `messages` (or `smb_message_echoes`) change.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesValue {
    /// Which business number the change is for.
    pub metadata: Option<Metadata>,
    /// Senders' profiles.
    #[serde(default)]
    pub contacts: Vec<ContactInfo>,
    /// Inbound messages.
    #[serde(default)]
    pub messages: Vec<Value>,
    /// Messages the business sent from the WhatsApp Business app (coexistence numbers).
    #[serde(default)]
    pub message_echoes: Vec<Value>,
    /// Status changes of our outbound messages.
    #[serde(default)]
    pub statuses: Vec<Value>,
    /// Out-of-band errors.
    #[serde(default)]
    pub errors: Vec<Value>,
}

/// The business number of a change.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    /// Digits, for display only.
    #[serde(default)]
    pub display_phone_number: String,
    /// The routing key.
    #[serde(default)]
    pub phone_number_id: String,
}

/// A WhatsApp user as a webhook introduces them.
#[derive(Debug, Default, Deserialize)]
pub struct ContactInfo {
    /// Profile; the name may be empty.
    pub profile: Option<Profile>,
    /// Phone number as WhatsApp knows it (digits); absent for some username users.
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub user_id: Option<String>,
}

/// A user's public profile.
#[derive(Debug, Default, Deserialize)]
pub struct Profile {
    /// Display name.
    pub name: Option<String>,
}

/// The fields every inbound message item has (type-specific objects are read from the raw
/// item by the renderer).
#[derive(Debug, Deserialize)]
pub struct MessageHead {
    /// The wamid.
    pub id: String,
    /// Sender's wa_id.
    pub from: Option<String>,
    /// Sender's BSUID.
    pub from_user_id: Option<String>,
    /// Recipient (echoes only).
    pub to: Option<String>,
    /// When the user sent it.
    #[serde(deserialize_with = "unix_seconds", default = "epoch")]
    pub timestamp: DateTime<Utc>,
    /// `text`, `image`, `reaction`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Reply / forward information.
    pub context: Option<Context>,
}

/// Reply and forward information of a message.
#[derive(Debug, Default, Deserialize)]
pub struct Context {
    /// The quoted message's wamid.
    pub id: Option<String>,
    /// Forwarded once.
    #[serde(default)]
    pub forwarded: bool,
    /// Forwarded many times.
    #[serde(default)]
    pub frequently_forwarded: bool,
}

/// A status change of one of our outbound messages.
#[derive(Debug, Deserialize)]
pub struct Status {
    /// The outbound wamid.
    pub id: String,
    /// `sent`, `delivered`, `read`, `played`, `failed`.
    pub status: String,
    /// When it changed.
    #[serde(deserialize_with = "unix_seconds", default = "epoch")]
    pub timestamp: DateTime<Utc>,
    /// Echo of what we passed on send (`out:<message id>`).
    pub biz_opaque_callback_data: Option<String>,
    /// Present on `failed`.
    #[serde(default)]
    pub errors: Vec<ErrorInfo>,
}

/// An error object in a status or message.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorInfo {
    /// The code all handling keys on.
    #[serde(default)]
    pub code: i64,
    /// Short title.
    pub title: Option<String>,
    /// Message text.
    pub message: Option<String>,
    /// Human-readable details.
    pub error_data: Option<ErrorData>,
}

/// Details of an error.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorData {
    /// Human-readable details.
    pub details: Option<String>,
}

/// Removes NUL characters from every string and key of `value`: PostgreSQL's text and jsonb
/// cannot hold them (a message carrying one could never be stored), and no person reads them.
pub fn strip_nul(value: &mut Value) {
    match value {
        Value::String(text) => text.retain(|c| c != '\0'),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', ""), v))
                    .collect();
            }
            map.values_mut().for_each(strip_nul);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn epoch() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// Latest time read from a webhook: the end of year 9999. Later ones (and negative ones) are
/// not times WhatsApp sends; PostgreSQL and date arithmetic need not cope with them.
const LATEST_SECONDS: i64 = 253_402_300_799;

/// Meta sends Unix seconds as strings, newer objects as numbers; accept both. A value that is
/// not a plausible time reads as the epoch rather than failing the whole event.
fn unix_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    let seconds = match &value {
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    Ok(seconds
        .filter(|s| (0..=LATEST_SECONDS).contains(s))
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
        .unwrap_or_else(epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_from_strings_and_numbers() {
        let a: MessageHead = serde_json::from_str(r#"{"id":"w1","timestamp":"1763800000"}"#).unwrap();
        let b: MessageHead = serde_json::from_str(r#"{"id":"w1","timestamp":1763800000}"#).unwrap();
        assert_eq!(a.timestamp, b.timestamp);
        assert_eq!(a.timestamp.timestamp(), 1_763_800_000);
        let c: MessageHead = serde_json::from_str(r#"{"id":"w1","timestamp":"soon"}"#).unwrap();
        assert_eq!(c.timestamp, epoch());
        for absurd in [
            "\"8210298412799\"",
            "-8334601228800",
            "\"-1\"",
            "1e30",
            "\"99999999999999999999\"",
        ] {
            let d: MessageHead =
                serde_json::from_str(&format!(r#"{{"id":"w1","timestamp":{absurd}}}"#)).unwrap();
            assert_eq!(d.timestamp, epoch(), "{absurd}");
        }
        let last: MessageHead = serde_json::from_str(r#"{"id":"w1","timestamp":253402300799}"#).unwrap();
        assert_eq!(last.timestamp.timestamp(), LATEST_SECONDS);
    }

    #[test]
    fn nul_characters_are_removed_everywhere() {
        let mut value = serde_json::json!({"a\u{0}b": ["x\u{0}y", {"k": "\u{0}"}], "n": 1});
        strip_nul(&mut value);
        assert_eq!(value, serde_json::json!({"ab": ["xy", {"k": ""}], "n": 1}));
    }

    #[test]
    fn unknown_fields_and_missing_arrays_are_tolerated() {
        let n: Notification =
            serde_json::from_str(r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"new_thing":1}}]}],"extra":true}"#)
                .unwrap();
        let v: MessagesValue = serde_json::from_value(n.entry[0].changes[0].value.clone()).unwrap();
        assert!(v.messages.is_empty() && v.statuses.is_empty() && v.metadata.is_none());
    }
}
