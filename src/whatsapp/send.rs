//! The `send_message` job: sends a stored outbound message through the Graph API, part by part
//! (text, then each file; or one template), recording WhatsApp's id of each part as soon as it
//! is known so that a retry never sends a part twice.
//!
//! The Messages API has no idempotency key. A request that got no answer may have been sent, so
//! it is not repeated blindly: the message stays `sending` while we wait for a status webhook
//! carrying our tracker (`out:<message id>:<part>`), and only after that wait is it sent again.

use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::graph::{ErrorClass, GraphClient, GraphError};
use super::outbound::{self, MediaKind};
use crate::pipedrive::delivery;
use crate::queue::{Handler, Job, JobError};
use crate::store::attachments::{self, OutboundFile};
use crate::store::messages::{self, Failure, MessageStatus, SendView};

/// Job kind.
pub const KIND: &str = "send_message";

/// How long to wait for a status webhook after an attempt that got no answer.
pub const NO_ANSWER_WAIT: Duration = Duration::from_secs(180);

/// Attempts after which a message that could not reach WhatsApp is reported as failed.
const PATIENCE: i32 = 10;

/// WhatsApp shows captions up to this length.
const MAX_CAPTION: usize = 1024;

/// Sends outbound messages.
pub struct Sender {
    /// Database pool.
    pub db: PgPool,
    /// Graph API client.
    pub graph: GraphClient,
}

/// One WhatsApp message of an outbound message.
enum Part<'a> {
    Text(&'a str),
    Template(&'a Value),
    File {
        file: &'a OutboundFile,
        kind: MediaKind,
        caption: Option<&'a str>,
    },
}

/// The tracker Meta echoes in status webhooks: our message id, plus the attachment id for a
/// part that carries a file.
pub fn tracker(message_id: Uuid, file: Option<Uuid>) -> String {
    match file {
        Some(file) => format!("out:{message_id}:{file}"),
        None => format!("out:{message_id}"),
    }
}

/// Reads a tracker back: our message id and, for a file part, the attachment id.
pub fn parse_tracker(value: &str) -> Option<(Uuid, Option<Uuid>)> {
    let rest = value.strip_prefix("out:")?;
    match rest.split_once(':') {
        Some((id, file)) => Some((Uuid::try_parse(id).ok()?, Some(Uuid::try_parse(file).ok()?))),
        None => Some((Uuid::try_parse(rest).ok()?, None)),
    }
}

impl Handler for Sender {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Input {
                message_id: Uuid,
            }
            let Input { message_id } = job.input()?;
            let result = self.send(message_id).await;
            match result {
                Err(JobError::Retry { error, .. }) if job.attempts >= PATIENCE => {
                    let reason = format!(
                        "WhatsApp could not be reached after {} attempts: {error}",
                        job.attempts
                    );
                    self.fail(
                        message_id,
                        &Failure {
                            code: None,
                            title: Some(&reason),
                            detail: None,
                        },
                    )
                    .await?;
                    Err(JobError::Permanent(reason))
                }
                other => other,
            }
        })
    }
}

impl Sender {
    async fn send(&self, message_id: Uuid) -> Result<(), JobError> {
        let Some(message) = messages::send_view(&self.db, message_id).await? else {
            return Err(JobError::permanent("no such outbound message"));
        };
        if message.status == MessageStatus::Failed {
            return Ok(());
        }
        // An attempt that got no answer is "in doubt" until a status webhook tells, or the wait
        // is over.
        if let Some(started) = message.send_attempted_at {
            let waited = (Utc::now() - started).to_std().unwrap_or_default();
            if waited < NO_ANSWER_WAIT {
                return Err(JobError::Retry {
                    error: "waiting to learn whether the last attempt reached WhatsApp".into(),
                    after: Some(NO_ANSWER_WAIT - waited),
                });
            }
        }
        let template = message
            .raw
            .as_ref()
            .map(|r| &r["template"])
            .filter(|t| t.is_object());
        let files = attachments::outbound_files(&self.db, message_id).await?;
        let parts = plan(&message, template, &files)?;
        let pending: Vec<&Part<'_>> = parts.iter().filter(|p| !part_sent(&message, p)).collect();
        if pending.is_empty() {
            return self.mark_sent(&message).await;
        }
        if template.is_none() && !outbound::window_open(message.last_inbound_at, Utc::now()) {
            let detail = "The 24-hour customer service window closed before the message could be sent; use an approved template";
            self.fail(
                message_id,
                &Failure {
                    code: Some(131047),
                    title: Some("Re-engagement message"),
                    detail: Some(detail),
                },
            )
            .await?;
            return Err(JobError::permanent(detail));
        }
        for part in pending {
            messages::begin_send(&self.db, message_id).await?;
            match self.send_part(&message, part).await {
                Ok(wamid) => self.record(&message, part, &wamid).await?,
                Err(error) => return Err(self.failed_attempt(message_id, error).await?),
            }
        }
        self.mark_sent(&message).await
    }

    async fn mark_sent(&self, message: &SendView) -> Result<(), JobError> {
        let mut tx = self.db.begin().await?;
        if messages::advance_status(&mut tx, message.id, MessageStatus::Sent, &Failure::default())
            .await?
            .is_some()
        {
            delivery::enqueue(&mut tx, message.id, message.conversation_id, "sent").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What to do after a part failed: decides between waiting, retrying and failing.
    async fn failed_attempt(&self, message_id: Uuid, error: GraphError) -> Result<JobError, sqlx::Error> {
        tracing::warn!(%message_id, %error, "send attempt failed");
        metrics::counter!("whatsapp_send_errors_total", "code" => error.code().map_or("none".into(), |c| c.to_string()))
            .increment(1);
        if matches!(error, GraphError::NoAnswer(_)) {
            // Maybe sent: stay `sending` and wait for a status webhook before trying again.
            return Ok(JobError::Retry {
                error: error.to_string(),
                after: Some(NO_ANSWER_WAIT),
            });
        }
        // A refused token fails the message too rather than holding it: the salesperson sees at
        // once that nothing went out, instead of a message that looks sent in Pipedrive.
        if error.class() == ErrorClass::Auth {
            tracing::error!(%error, "WhatsApp refused the access token; fix WHATSAPP_ACCESS_TOKEN");
        }
        if matches!(error.class(), ErrorClass::Permanent | ErrorClass::Auth) {
            let (code, title, detail) = match &error {
                GraphError::Api {
                    code,
                    message,
                    details,
                    ..
                } => (i32::try_from(*code).ok(), Some(message.clone()), details.clone()),
                other => (None, Some(other.to_string()), None),
            };
            messages::settle_attempt(&self.db, message_id, true).await?;
            self.fail(
                message_id,
                &Failure {
                    code,
                    title: title.as_deref(),
                    detail: detail.as_deref(),
                },
            )
            .await?;
            return Ok(JobError::Permanent(error.to_string()));
        }
        messages::settle_attempt(&self.db, message_id, false).await?;
        Ok(error.into())
    }

    async fn fail(&self, message_id: Uuid, failure: &Failure<'_>) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if let Some(conversation_id) =
            messages::advance_status(&mut tx, message_id, MessageStatus::Failed, failure).await?
        {
            delivery::enqueue(&mut tx, message_id, conversation_id, "failed").await?;
        }
        tx.commit().await
    }

    async fn send_part(&self, message: &SendView, part: &Part<'_>) -> Result<String, GraphError> {
        let file_id = match part {
            Part::File { file, .. } => Some(file.id),
            _ => None,
        };
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "biz_opaque_callback_data": tracker(message.id, file_id),
        });
        match (&message.wa_id, &message.bsuid) {
            (Some(wa_id), _) => body["to"] = json!(wa_id),
            (None, Some(bsuid)) => body["recipient"] = json!(bsuid),
            (None, None) => {
                return Err(GraphError::Decode(
                    "the customer has neither a phone number nor a user id".into(),
                ));
            }
        }
        match part {
            Part::Text(text) => {
                body["type"] = json!("text");
                body["text"] = json!({"body": text, "preview_url": true});
            }
            Part::Template(template) => {
                body["type"] = json!("template");
                body["template"] = template_body(template);
            }
            Part::File { file, kind, caption } => {
                let media_id = match &file.media_id {
                    Some(id) => id.clone(),
                    None => self.upload(&message.phone_number_id, file).await?,
                };
                let mut media = json!({"id": media_id});
                if let Some(caption) = caption {
                    media["caption"] = json!(caption);
                }
                if *kind == MediaKind::Document {
                    media["filename"] = json!(file.filename.as_deref().unwrap_or("document"));
                }
                body["type"] = json!(kind.as_str());
                body[kind.as_str()] = media;
            }
        }
        #[derive(Deserialize)]
        struct Sent {
            messages: Vec<SentMessage>,
        }
        #[derive(Deserialize)]
        struct SentMessage {
            id: String,
        }
        let sent: Sent = self
            .graph
            .post(&format!("/{}/messages", message.phone_number_id), &body)
            .await?;
        sent.messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| GraphError::Decode("the send answer carries no message id".into()))
    }

    async fn upload(&self, phone_number_id: &str, file: &OutboundFile) -> Result<String, GraphError> {
        let content = attachments::content(&self.db, file.id)
            .await
            .map_err(|e| GraphError::Unreachable(format!("reading the file failed: {e}")))?
            .ok_or_else(|| GraphError::Decode("the file to upload is not stored".into()))?;
        let part = reqwest::multipart::Part::bytes(content.content)
            .file_name(file.filename.clone().unwrap_or_else(|| "file".into()))
            .mime_str(&file.mime_type)
            .map_err(|e| GraphError::Decode(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", file.mime_type.clone())
            .part("file", part);
        #[derive(Deserialize)]
        struct Uploaded {
            id: String,
        }
        let uploaded: Uploaded = self
            .graph
            .send_json(
                self.graph
                    .authorized(
                        reqwest::Method::POST,
                        &self.graph.url(&format!("/{phone_number_id}/media")),
                    )
                    .multipart(form),
            )
            .await?;
        attachments::set_media_id(&self.db, file.id, &uploaded.id)
            .await
            .map_err(|e| GraphError::Unreachable(format!("recording the upload failed: {e}")))?;
        Ok(uploaded.id)
    }

    async fn record(&self, message: &SendView, part: &Part<'_>, wamid: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        match part {
            Part::File { file, .. } => attachments::set_wamid_if_missing(&mut *tx, file.id, wamid).await?,
            Part::Text(_) | Part::Template(_) => {
                messages::set_wamid_if_missing(&mut tx, message.id, wamid).await?
            }
        }
        messages::settle_attempt(&mut *tx, message.id, true).await?;
        tx.commit().await
    }
}

/// The parts of a message, in sending order: a template alone; else the text (as the first
/// file's caption when it fits) and each file.
fn plan<'a>(
    message: &'a SendView,
    template: Option<&'a Value>,
    files: &'a [OutboundFile],
) -> Result<Vec<Part<'a>>, JobError> {
    if let Some(template) = template {
        return Ok(vec![Part::Template(template)]);
    }
    let kinds = files
        .iter()
        .map(|f| outbound::classify(&f.mime_type).map(|(k, _)| k))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| JobError::permanent("a stored file has a type WhatsApp does not accept"))?;
    let text = message
        .raw
        .as_ref()
        .and_then(|r| r["text"].as_str())
        .unwrap_or(message.body.as_str());
    let caption_fits = !text.is_empty()
        && text.chars().count() <= MAX_CAPTION
        && kinds.first().is_some_and(|k| k.takes_caption());
    let mut parts = Vec::new();
    if !text.is_empty() && !caption_fits {
        parts.push(Part::Text(text));
    }
    for (i, (file, kind)) in files.iter().zip(kinds).enumerate() {
        let caption = (i == 0 && caption_fits).then_some(text);
        parts.push(Part::File { file, kind, caption });
    }
    Ok(parts)
}

/// Whether a part already reached WhatsApp in an earlier attempt.
fn part_sent(message: &SendView, part: &Part<'_>) -> bool {
    match part {
        Part::File { file, .. } => file.wamid.is_some(),
        Part::Text(_) | Part::Template(_) => message.wamid.is_some(),
    }
}

/// The `template` object of a send, with body parameters (named ones carry their name).
fn template_body(template: &Value) -> Value {
    let names = template["names"].as_array().cloned().unwrap_or_default();
    let values = template["values"].as_array().cloned().unwrap_or_default();
    let parameters: Vec<Value> = names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let name = name.as_str().unwrap_or_default();
            if name.chars().all(|c| c.is_ascii_digit()) {
                json!({"type": "text", "text": value})
            } else {
                json!({"type": "text", "text": value, "parameter_name": name})
            }
        })
        .collect();
    let mut body = json!({
        "name": template["name"],
        "language": {"code": template["language"], "policy": "deterministic"},
    });
    if !parameters.is_empty() {
        body["components"] = json!([{"type": "body", "parameters": parameters}]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackers_round_trip() {
        let (id, file) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(parse_tracker(&tracker(id, Some(file))), Some((id, Some(file))));
        assert_eq!(parse_tracker(&tracker(id, None)), Some((id, None)));
        assert_eq!(parse_tracker("campaign-7"), None);
        assert_eq!(parse_tracker("out:not-a-uuid"), None);
    }

    #[test]
    fn template_parameters_follow_the_placeholders() {
        let positional = template_body(&json!({"name": "order", "language": "en_US",
            "names": ["1", "2"], "values": ["Ana", "#42"]}));
        assert_eq!(
            positional["components"][0]["parameters"][1],
            json!({"type": "text", "text": "#42"})
        );
        assert_eq!(positional["language"]["code"], "en_US");
        let named = template_body(
            &json!({"name": "n", "language": "de", "names": ["customer"], "values": ["Jonas"]}),
        );
        assert_eq!(
            named["components"][0]["parameters"][0]["parameter_name"],
            "customer"
        );
        let plain = template_body(&json!({"name": "hello", "language": "en", "names": [], "values": []}));
        assert!(plain.get("components").is_none());
    }
}
