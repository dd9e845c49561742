//! Opaque pagination cursors of the provider endpoints: a position in a keyset ordering
//! (timestamp, id), bound to the channel or conversation it was issued for so that a cursor
//! from elsewhere is refused rather than silently misread.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Conversations of a channel (newest activity first).
    Conversations,
    /// Messages of a conversation (newest first).
    Messages,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Conversations => "c",
            Kind::Messages => "m",
        }
    }
}

/// A decoded cursor: the page continues strictly after (older than) `at`/`id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Timestamp of the last item of the previous page.
    pub at: DateTime<Utc>,
    /// Id of the last item of the previous page.
    pub id: Uuid,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not a cursor of ours.
    #[error("the cursor is malformed")]
    Malformed,
    /// A cursor of ours, but for another channel, conversation or list.
    #[error("the cursor belongs to another list")]
    Foreign,
}

/// Encodes a cursor for `kind` within `scope` (channel or conversation id).
pub fn encode(kind: Kind, scope: Uuid, cursor: Cursor) -> String {
    let text = format!(
        "1.{}.{}.{}.{}",
        kind.tag(),
        scope.simple(),
        cursor.at.timestamp_micros(),
        cursor.id.simple()
    );
    URL_SAFE_NO_PAD.encode(text)
}

/// Decodes a cursor issued by [`encode`] for the same `kind` and `scope`.
pub fn decode(kind: Kind, scope: Uuid, value: &str) -> Result<Cursor, CursorError> {
    if value.len() > 256 {
        return Err(CursorError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(value.trim())
        .map_err(|_| CursorError::Malformed)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| CursorError::Malformed)?;
    let mut parts = text.split('.');
    let (Some("1"), Some(tag), Some(scope_part), Some(micros), Some(id), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(CursorError::Malformed);
    };
    let scope_of_cursor = Uuid::try_parse(scope_part).map_err(|_| CursorError::Malformed)?;
    let micros: i64 = micros.parse().map_err(|_| CursorError::Malformed)?;
    let at = DateTime::from_timestamp_micros(micros).ok_or(CursorError::Malformed)?;
    let id = Uuid::try_parse(id).map_err(|_| CursorError::Malformed)?;
    if !matches!(tag, "c" | "m") {
        return Err(CursorError::Malformed);
    }
    if tag != kind.tag() || scope_of_cursor != scope {
        return Err(CursorError::Foreign);
    }
    Ok(Cursor { at, id })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips_within_its_scope_only() {
        let scope = Uuid::now_v7();
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_763_800_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let text = encode(Kind::Messages, scope, cursor);
        assert_eq!(decode(Kind::Messages, scope, &text), Ok(cursor));
        assert_eq!(
            decode(Kind::Conversations, scope, &text),
            Err(CursorError::Foreign)
        );
        assert_eq!(
            decode(Kind::Messages, Uuid::now_v7(), &text),
            Err(CursorError::Foreign)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let scope = Uuid::now_v7();
        for bad in ["", "x", "!!!", "MS5jLnh4LjEuMg", &"A".repeat(300), "' OR 1=1 --"] {
            assert_eq!(
                decode(Kind::Conversations, scope, bad),
                Err(CursorError::Malformed),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(input in ".{0,300}") {
            let _ = decode(Kind::Messages, Uuid::nil(), &input);
        }

        #[test]
        fn every_valid_cursor_round_trips(micros in -8_000_000_000_000_000_000i64..8_000_000_000_000_000_000i64, a: u128, b: u128) {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let cursor = Cursor { at, id: Uuid::from_u128(a) };
            let scope = Uuid::from_u128(b);
            prop_assert_eq!(decode(Kind::Conversations, scope, &encode(Kind::Conversations, scope, cursor)), Ok(cursor));
        }
    }
}
