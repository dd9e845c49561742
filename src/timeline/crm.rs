//! Pipedrive's CRM API as the timeline uses it (persons, deals, leads, notes), acting as the
//! installation that owns a channel. Every answered call is counted against the company's
//! budget, and an exhausted burst window is waited out before the next call.

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::TimelineError;
use super::budget::{self, Budget, Call};
use crate::pipedrive::{PipedriveClient, PipedriveError, PipedriveResponse};

/// The CRM of one company, through one installation's token.
pub struct Crm<'a> {
    /// Pipedrive's API.
    pub pipedrive: &'a PipedriveClient,
    /// Where calls are counted.
    pub budget: &'a Budget,
    /// The installation whose token is used.
    pub installation_id: Uuid,
    /// Its company.
    pub company_id: i64,
}

impl Crm<'_> {
    async fn call(
        &self,
        call: Call,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<PipedriveResponse, TimelineError> {
        let result = self
            .pipedrive
            .request(self.installation_id, method, path, body)
            .await;
        // Answered calls cost tokens whatever they said; rate-limited and unsent ones do not.
        if matches!(
            result,
            Ok(_) | Err(PipedriveError::Gone { .. } | PipedriveError::Rejected { .. })
        ) {
            self.budget.record(self.company_id, call).await?;
        }
        let response = result?;
        if let Some(pause) = budget::breather(&response.rate_limit) {
            tracing::debug!(?pause, "Pipedrive burst window used up; pausing");
            tokio::time::sleep(pause).await;
        }
        Ok(response)
    }

    /// Ids of the persons whose phone is exactly `term`.
    pub async fn search_persons(&self, term: &str) -> Result<Vec<i64>, TimelineError> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("term", term)
            .append_pair("fields", "phone")
            .append_pair("exact_match", "true")
            .finish();
        let path = format!("/api/v2/persons/search?{query}");
        let response = self.call(Call::SearchPersons, Method::GET, &path, None).await?;
        let mut ids: Vec<i64> = items(&response.body, "/data/items")
            .iter()
            .filter_map(|entry| entry.pointer("/item/id").and_then(Value::as_i64))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Creates a person named `name` with the mobile number `phone` (E.164); returns its id.
    pub async fn create_person(&self, name: &str, phone: &str) -> Result<i64, TimelineError> {
        let body = serde_json::json!({
            "name": name,
            "phones": [{"value": phone, "primary": true, "label": "mobile"}],
        });
        let response = self
            .call(Call::CreatePerson, Method::POST, "/api/v2/persons", Some(&body))
            .await?;
        id(&response, "the created person")
    }

    /// Ids of a person's open deals (at most two: more than one is as good as many).
    pub async fn open_deals(&self, person_id: i64) -> Result<Vec<i64>, TimelineError> {
        let path = format!("/api/v2/deals?person_id={person_id}&status=open&limit=2");
        let response = self.call(Call::ListDeals, Method::GET, &path, None).await?;
        Ok(items(&response.body, "/data")
            .iter()
            .filter_map(|deal| deal.get("id").and_then(Value::as_i64))
            .collect())
    }

    /// Ids of a person's open (not archived) leads, at most two.
    pub async fn open_leads(&self, person_id: i64) -> Result<Vec<String>, TimelineError> {
        let path = format!("/api/v1/leads?person_id={person_id}&limit=2");
        let response = self.call(Call::ListLeads, Method::GET, &path, None).await?;
        Ok(items(&response.body, "/data")
            .iter()
            .filter(|lead| lead.get("is_archived").and_then(Value::as_bool) != Some(true))
            .filter_map(|lead| lead.get("id").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// Creates a note; returns its id.
    pub async fn create_note(&self, body: &Value) -> Result<i64, TimelineError> {
        let response = self
            .call(Call::CreateNote, Method::POST, "/api/v1/notes", Some(body))
            .await?;
        id(&response, "the created note")
    }

    /// Rewrites a note in place.
    pub async fn update_note(&self, note_id: i64, body: &Value) -> Result<(), TimelineError> {
        let path = format!("/api/v1/notes/{note_id}");
        self.call(Call::UpdateNote, Method::PUT, &path, Some(body))
            .await?;
        Ok(())
    }
}

fn items<'a>(body: &'a Value, pointer: &str) -> &'a [Value] {
    body.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn id(response: &PipedriveResponse, what: &str) -> Result<i64, TimelineError> {
    response
        .body
        .pointer("/data/id")
        .and_then(Value::as_i64)
        .ok_or_else(|| TimelineError::Unexpected(format!("Pipedrive's answer lacks the id of {what}")))
}
