//! Whom a panel is about: the person of a Pipedrive detail view (or a deal's person), read
//! through the installation's API access, and the WhatsApp ids their phone numbers may be.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::phone;
use crate::pipedrive::{PipedriveClient, PipedriveError};

/// Pipedrive must answer within this, or the page would miss the SDK's 10-second limit.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The detail view a panel is shown on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A person's detail view.
    Person(i64),
    /// A deal's detail view: the deal's contact person.
    Deal(i64),
}

/// A Pipedrive person and their phone numbers as typed there.
#[derive(Debug, Clone)]
pub struct Person {
    /// Name.
    pub name: String,
    /// Phone numbers as typed in Pipedrive.
    pub phones: Vec<String>,
}

/// Why the person could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The deal has no contact person.
    #[error("the deal has no contact person")]
    NoPerson,
    /// Pipedrive refused or failed.
    #[error(transparent)]
    Pipedrive(#[from] PipedriveError),
    /// Pipedrive did not answer in time.
    #[error("Pipedrive did not answer within {LOOKUP_TIMEOUT:?}")]
    TimedOut,
}

/// Reads the person of `subject`, acting as `installation_id`.
#[tracing::instrument(skip_all, fields(?subject))]
pub async fn fetch(
    client: &PipedriveClient,
    installation_id: Uuid,
    subject: Subject,
) -> Result<Person, LookupError> {
    tokio::time::timeout(LOOKUP_TIMEOUT, async {
        let person_id = match subject {
            Subject::Person(id) => id,
            Subject::Deal(id) => {
                let deal = client
                    .request(installation_id, Method::GET, &format!("/api/v2/deals/{id}"), None)
                    .await?;
                id_of(&deal.body["data"]["person_id"]).ok_or(LookupError::NoPerson)?
            }
        };
        let person = client
            .request(
                installation_id,
                Method::GET,
                &format!("/api/v2/persons/{person_id}"),
                None,
            )
            .await?;
        Ok(person_from(&person.body["data"]))
    })
    .await
    .map_err(|_| LookupError::TimedOut)?
}

/// An id written as a number, a string, or (API v1) an object carrying `value` or `id`.
fn id_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => o.get("value").or_else(|| o.get("id")).and_then(id_of),
        _ => None,
    }
    .filter(|id| *id > 0)
}

fn person_from(data: &Value) -> Person {
    let phones = data["phones"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["value"].as_str().or_else(|| p.as_str()))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    Person {
        name: data["name"].as_str().unwrap_or_default().trim().to_string(),
        phones,
    }
}

/// The ISO region of an international number (the region a business number is in is the
/// best guess for numbers its salespeople typed without a country code).
pub fn region_of(number: &str) -> Option<String> {
    let e164 = phone::normalize(number, None)?;
    let parsed = phonenumber::parse(None, &e164).ok()?;
    parsed.country().id().map(|id| id.as_ref().to_string())
}

/// Every `wa_id` (international digits) the numbers may be on WhatsApp, national variants
/// included; numbers without a country code are read in `default_region`.
pub fn wa_ids(phones: &[String], default_region: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in phones {
        let Some(e164) = phone::normalize(raw, None).or_else(|| phone::normalize(raw, default_region)) else {
            continue;
        };
        for variant in phone::variants(&e164) {
            let digits = phone::digits(&variant);
            if !out.contains(&digits) {
                out.push(digits);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn persons_are_read_from_api_v2_objects_and_plain_strings() {
        let person = person_from(&json!({"name": " Ana Souza ", "phones": [
                {"value": "+55 11 98765-4321", "primary": true, "label": "mobile"},
                {"value": "", "primary": false}, "030 1234567"]}));
        assert_eq!(person.name, "Ana Souza");
        assert_eq!(person.phones, ["+55 11 98765-4321", "030 1234567"]);
    }

    #[test]
    fn deal_person_ids_come_in_several_shapes() {
        assert_eq!(id_of(&json!(42)), Some(42));
        assert_eq!(id_of(&json!("42")), Some(42));
        assert_eq!(id_of(&json!({"value": 42, "name": "Ana"})), Some(42));
        assert_eq!(id_of(&json!(null)), None);
        assert_eq!(id_of(&json!(0)), None);
    }

    #[test]
    fn numbers_become_wa_ids_with_their_national_variants() {
        let phones = vec![
            "+55 11 98765-4321".to_string(),
            "030 1234567".to_string(),
            "n/a".to_string(),
        ];
        assert_eq!(
            wa_ids(&phones, Some("DE")),
            ["5511987654321", "551187654321", "49301234567"]
        );
        assert_eq!(wa_ids(&phones, None), ["5511987654321", "551187654321"]);
        assert_eq!(region_of("+55 11 3265-4321").as_deref(), Some("BR"));
        assert_eq!(region_of("+1 415-555-2671").as_deref(), Some("US"));
        assert_eq!(region_of("not a number"), None);
    }
}
