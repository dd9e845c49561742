//! A meeting as Pipedrive describes it (`topic`, `start_time`, `duration`), its room name and the
//! invitation text Pipedrive shows next to the activity.
//!
//! Parsing is deliberately tolerant where the contract is vague (other date-time shapes, numeric
//! strings, partial updates) and strict where a wrong value would mislead users (a duration
//! that is not a positive number, a date that is not a date).

use chrono::{DateTime, Datelike, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use crate::crypto;

/// Longest meeting accepted: 31 days. Bounds token lifetimes and the integer column.
const MAX_DURATION_MINUTES: i32 = 31 * 24 * 60;

/// Longest topic kept, in characters (the body limit bounds it anyway; this keeps rows sane).
const MAX_TOPIC_CHARS: usize = 1000;

/// Longest readable part of a room name.
const MAX_SLUG_LEN: usize = 40;

/// Random bytes in a room name: 128 bits, so nobody can find a room by guessing.
const ROOM_RANDOM_BYTES: usize = 16;

/// The documented wire format of `start_time` (always UTC).
const CONTRACT_FORMAT: &str = "%Y-%m-%d %H:%M";

/// Other shapes accepted defensively, still read as UTC; RFC 3339 with an offset is also taken.
const TOLERATED_FORMATS: [&str; 3] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S%.f"];

/// A field of a meeting request that is missing or malformed; the message names it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct InvalidMeeting {
    /// The offending field (`topic`, `start_time`, `duration`) or `body`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

/// A complete, valid meeting description: the body of `postMeeting`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingDetails {
    /// The activity's subject.
    pub topic: String,
    /// When the meeting starts.
    pub start_time: DateTime<Utc>,
    /// Length in whole minutes, at least 1.
    pub duration_minutes: i32,
}

/// The fields of a `patchUpdateMeeting` body. The contract sends all three, but a field left
/// out keeps its stored value rather than failing the user's edit in Pipedrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeetingChanges {
    /// New subject.
    pub topic: Option<String>,
    /// New start.
    pub start_time: Option<DateTime<Utc>>,
    /// New length in minutes.
    pub duration_minutes: Option<i32>,
}

impl MeetingDetails {
    /// Reads and validates a `postMeeting` body; every field is required.
    pub fn from_json(body: &Map<String, Value>) -> Result<Self, InvalidMeeting> {
        Ok(Self {
            topic: field(body, "topic", parse_topic)?.ok_or_else(|| missing("topic"))?,
            start_time: field(body, "start_time", parse_start_time)?.ok_or_else(|| missing("start_time"))?,
            duration_minutes: field(body, "duration", parse_duration)?.ok_or_else(|| missing("duration"))?,
        })
    }

    /// When the meeting is scheduled to end.
    pub fn end_time(&self) -> DateTime<Utc> {
        self.start_time + TimeDelta::minutes(i64::from(self.duration_minutes))
    }
}

impl MeetingChanges {
    /// Reads and validates a `patchUpdateMeeting` body: each present field must be valid, and at
    /// least one must be present.
    pub fn from_json(body: &Map<String, Value>) -> Result<Self, InvalidMeeting> {
        let changes = Self {
            topic: field(body, "topic", parse_topic)?,
            start_time: field(body, "start_time", parse_start_time)?,
            duration_minutes: field(body, "duration", parse_duration)?,
        };
        if changes == Self::default() {
            return Err(InvalidMeeting {
                field: "body",
                problem: "expected at least one of topic, start_time and duration".into(),
            });
        }
        Ok(changes)
    }
}

/// The value of `name` parsed by `parse`; `None` when absent or `null`.
fn field<T>(
    body: &Map<String, Value>,
    name: &'static str,
    parse: fn(&Value) -> Result<T, String>,
) -> Result<Option<T>, InvalidMeeting> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse(value)
            .map(Some)
            .map_err(|problem| InvalidMeeting { field: name, problem }),
    }
}

fn missing(field: &'static str) -> InvalidMeeting {
    InvalidMeeting {
        field,
        problem: "is missing".into(),
    }
}

/// A short rendering of a rejected value for the error message.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn parse_topic(value: &Value) -> Result<String, String> {
    let topic = value
        .as_str()
        .ok_or_else(|| format!("expected a string, got {}", shown(value)))?
        .trim();
    if topic.chars().count() > MAX_TOPIC_CHARS {
        return Err(format!("is longer than {MAX_TOPIC_CHARS} characters"));
    }
    Ok(topic.to_string())
}

fn parse_start_time(value: &Value) -> Result<DateTime<Utc>, String> {
    let expected = || format!("expected \"YYYY-MM-DD HH:mm\" in UTC, got {}", shown(value));
    let text = value.as_str().ok_or_else(expected)?.trim();
    let parsed = std::iter::once(CONTRACT_FORMAT)
        .chain(TOLERATED_FORMATS)
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc()))
        .ok_or_else(expected)?;
    // Keeps every derived instant (token expiry, PostgreSQL timestamps) far from overflow.
    if !(1970..=9999).contains(&parsed.year()) {
        return Err(format!(
            "is out of range (years 1970 to 9999), got {}",
            shown(value)
        ));
    }
    Ok(parsed)
}

fn parse_duration(value: &Value) -> Result<i32, String> {
    let invalid = || format!("expected a positive number of minutes, got {}", shown(value));
    let minutes = match value {
        Value::Number(n) => n.as_f64(),
        // Tolerated: a number sent as text, e.g. "45".
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|m| m.is_finite() && *m > 0.0)
    .ok_or_else(invalid)?;
    if minutes > f64::from(MAX_DURATION_MINUTES) {
        return Err(format!("is longer than {MAX_DURATION_MINUTES} minutes (31 days)"));
    }
    // A fractional length is rounded up: a meeting is never cut short.
    Ok(minutes.ceil() as i32)
}

/// A fresh, unguessable room name: a readable slug of the topic, then 128 random bits in hex.
pub fn room_name(topic: &str) -> String {
    format!(
        "{}-{}",
        slug(topic),
        hex::encode(crypto::random_bytes::<ROOM_RANDOM_BYTES>())
    )
}

/// Lowercase ASCII letters and digits separated by single hyphens, at most 40 characters;
/// common Latin accents are folded, anything else separates words; "meeting" when nothing is left.
fn slug(topic: &str) -> String {
    let mut slug = String::with_capacity(MAX_SLUG_LEN);
    let mut pending_hyphen = false;
    let folded: String = topic.chars().map(fold).collect();
    for c in folded.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_hyphen && !slug.is_empty() {
                slug.push('-');
            }
            pending_hyphen = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            pending_hyphen = true;
        }
        if slug.len() >= MAX_SLUG_LEN {
            break;
        }
    }
    slug.truncate(MAX_SLUG_LEN);
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "meeting".into()
    } else {
        slug.into()
    }
}

/// The plain-Latin spelling of common accented letters, so "Überprüfung" reads "uberprufung".
fn fold(c: char) -> String {
    let folded = match c.to_lowercase().next().unwrap_or(c) {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'ç' | 'ć' | 'č' => "c",
        'ď' | 'đ' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ł' | 'ľ' | 'ĺ' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'ŕ' | 'ř' => "r",
        'ś' | 'š' | 'ş' => "s",
        'ß' => "ss",
        'ť' | 'ţ' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        _ => return c.to_string(),
    };
    folded.to_string()
}

/// Ready-to-paste text: topic, start (UTC), duration and the link.
pub fn invitation(details: &MeetingDetails, join_url: &str) -> String {
    let title = if details.topic.is_empty() {
        "Video call"
    } else {
        &details.topic
    };
    format!(
        "{title}\nWhen: {} UTC\nDuration: {}\nJoin the video call: {join_url}",
        details.start_time.format(CONTRACT_FORMAT),
        human_duration(details.duration_minutes),
    )
}

fn human_duration(minutes: i32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn details(value: Value) -> Result<MeetingDetails, InvalidMeeting> {
        MeetingDetails::from_json(&body(value))
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn reads_the_documented_body() {
        let d = details(json!({"topic": " Demo call ", "start_time": "2026-12-01 14:30", "duration": 45}))
            .unwrap();
        assert_eq!(d.topic, "Demo call");
        assert_eq!(d.start_time, at(2026, 12, 1, 14, 30));
        assert_eq!(d.duration_minutes, 45);
        assert_eq!(d.end_time(), at(2026, 12, 1, 15, 15));
    }

    #[test]
    fn tolerates_other_time_shapes_as_utc() {
        for text in [
            "2026-12-01 14:30:00",
            "2026-12-01T14:30",
            "2026-12-01T14:30:00.000",
            "2026-12-01T14:30:00Z",
            "2026-12-01T15:30:00+01:00",
            "2026-12-01T14:30:00.000Z",
        ] {
            let d = details(json!({"topic": "t", "start_time": text, "duration": 1})).unwrap();
            assert_eq!(d.start_time, at(2026, 12, 1, 14, 30), "{text}");
        }
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let cases = [
            (json!({"start_time": "2026-12-01 14:30", "duration": 45}), "topic"),
            (
                json!({"topic": 7, "start_time": "2026-12-01 14:30", "duration": 45}),
                "topic",
            ),
            (json!({"topic": "t", "duration": 45}), "start_time"),
            (
                json!({"topic": "t", "start_time": "tomorrow", "duration": 45}),
                "start_time",
            ),
            (
                json!({"topic": "t", "start_time": "2026-13-01 14:30", "duration": 45}),
                "start_time",
            ),
            (
                json!({"topic": "t", "start_time": "0001-01-01 00:00", "duration": 45}),
                "start_time",
            ),
            (
                json!({"topic": "t", "start_time": 1764599400, "duration": 45}),
                "start_time",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30"}),
                "duration",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": 0}),
                "duration",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": -5}),
                "duration",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": "an hour"}),
                "duration",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": "NaN"}),
                "duration",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": true}),
                "duration",
            ),
            (
                json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": 1e12}),
                "duration",
            ),
            (
                json!({"topic": "x".repeat(1001), "start_time": "2026-12-01 14:30", "duration": 1}),
                "topic",
            ),
        ];
        for (value, field) in cases {
            let err = details(value.clone()).expect_err(&value.to_string());
            assert_eq!(err.field, field, "{value}");
            assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        }
    }

    #[test]
    fn durations_are_whole_minutes_rounded_up() {
        for (value, minutes) in [
            (json!(30), 30),
            (json!(30.0), 30),
            (json!(0.2), 1),
            (json!(" 45 "), 45),
        ] {
            let d =
                details(json!({"topic": "t", "start_time": "2026-12-01 14:30", "duration": value})).unwrap();
            assert_eq!(d.duration_minutes, minutes);
        }
    }

    #[test]
    fn changes_leave_absent_fields_out_and_need_at_least_one() {
        let changes = MeetingChanges::from_json(&body(json!({"duration": 90, "topic": null}))).unwrap();
        assert_eq!(
            changes,
            MeetingChanges {
                duration_minutes: Some(90),
                ..MeetingChanges::default()
            }
        );

        assert_eq!(
            MeetingChanges::from_json(&body(json!({}))).unwrap_err().field,
            "body"
        );
        let err = MeetingChanges::from_json(&body(json!({"start_time": "soon"}))).unwrap_err();
        assert_eq!(err.field, "start_time");
    }

    #[test]
    fn room_names_are_readable_and_unguessable() {
        let a = room_name("Demo call with Jonas Weber!");
        let b = room_name("Demo call with Jonas Weber!");
        assert_ne!(a, b);
        let (readable, random) = a.rsplit_once('-').unwrap();
        assert_eq!(readable, "demo-call-with-jonas-weber");
        assert_eq!(random.len(), 2 * ROOM_RANDOM_BYTES);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn slugs_are_short_ascii_words() {
        assert_eq!(slug("Überprüfung — Straße & Co."), "uberprufung-strasse-co");
        assert_eq!(slug("  --  "), "meeting");
        assert_eq!(slug("会議"), "meeting");
        assert_eq!(slug("Q4 review: ACME/Globex"), "q4-review-acme-globex");
        let long = slug(&"word ".repeat(20));
        assert!(long.len() <= MAX_SLUG_LEN && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn invitation_has_topic_time_duration_and_link() {
        let d = details(json!({"topic": "Demo", "start_time": "2026-12-01 14:30", "duration": 90})).unwrap();
        assert_eq!(
            invitation(&d, "https://meet.example.org/demo-1"),
            "Demo\nWhen: 2026-12-01 14:30 UTC\nDuration: 1 h 30 min\nJoin the video call: https://meet.example.org/demo-1"
        );
        assert_eq!(human_duration(45), "45 min");
        assert_eq!(human_duration(120), "2 h");
        let untitled = MeetingDetails {
            topic: String::new(),
            ..d
        };
        assert!(invitation(&untitled, "u").starts_with("Video call\n"));
    }
}
