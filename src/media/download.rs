//! The `download_media` job: fetch an inbound attachment from WhatsApp while Meta's link is
//! valid (`GET /{media-id}` for a 5-minute URL, then the bytes with the same token), check its
//! size and SHA-256, and store it in PostgreSQL.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::pipedrive::delivery;
use crate::queue::{self, Handler, Job, JobError, NewJob};
use crate::store::attachments::{self, AttachmentStatus};
use crate::store::messages;
use crate::whatsapp::graph::{GraphClient, GraphError};

/// Job kind.
pub const KIND: &str = "download_media";

/// WhatsApp's largest media (documents).
pub const MAX_BYTES: u64 = 100 * 1024 * 1024;

/// Failed attempts after which the message is forwarded without the file (with a note); the
/// download keeps being retried in the background and the message is updated if it succeeds.
const PATIENCE: i32 = 5;

/// Hosts Meta serves media from.
const MEDIA_HOST_SUFFIXES: &[&str] = &[".fbsbx.com", ".fbcdn.net", ".whatsapp.net", ".facebook.com"];

/// Queues the download of an attachment (once).
pub async fn enqueue(conn: &mut PgConnection, attachment_id: Uuid) -> Result<(), sqlx::Error> {
    queue::enqueue(
        conn,
        NewJob::new(KIND, &json!({"attachment_id": attachment_id})).dedup(format!("media:{attachment_id}")),
    )
    .await?;
    Ok(())
}

/// Downloads media.
pub struct Download {
    /// Database pool.
    pub db: PgPool,
    /// Graph API client (its token also authorises the download).
    pub graph: GraphClient,
    /// Host of the configured Graph URL, also trusted for downloads (proxies, test servers).
    pub graph_host: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// Retrying cannot help: the media is gone or unacceptable.
    #[error("{0}")]
    Unavailable(String),
    /// Try again (a fresh URL is fetched each attempt).
    #[error("{0}")]
    Transient(String),
    #[error(transparent)]
    Graph(GraphError),
}

#[derive(Deserialize)]
struct MediaInfo {
    url: String,
    mime_type: Option<String>,
    sha256: Option<String>,
    file_size: Option<Value>,
}

impl Handler for Download {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Input {
                attachment_id: Uuid,
            }
            let Input { attachment_id } = job.input()?;
            let Some(attachment) = attachments::find(&self.db, attachment_id).await? else {
                return Ok(());
            };
            if attachment.status == AttachmentStatus::Stored {
                return Ok(());
            }
            let Some(media_id) = attachment.media_id.as_deref() else {
                return Err(JobError::permanent("attachment has no media id"));
            };
            match self.fetch(media_id).await {
                Ok((mime_type, sha256, bytes)) => {
                    let previous =
                        attachments::store_content(&self.db, attachment_id, &mime_type, &sha256, &bytes)
                            .await?;
                    metrics::counter!("media_downloads_total", "outcome" => "stored").increment(1);
                    if previous == Some(AttachmentStatus::Failed) {
                        // The message went out with a note; send it again with its file.
                        self.redeliver(attachment.message_id, attachment_id).await?;
                    }
                    Ok(())
                }
                Err(FetchError::Unavailable(reason)) => {
                    metrics::counter!("media_downloads_total", "outcome" => "unavailable").increment(1);
                    tracing::warn!(%attachment_id, reason, "media cannot be downloaded");
                    attachments::mark_failed(&self.db, attachment_id, &reason).await?;
                    Ok(())
                }
                Err(error) => {
                    metrics::counter!("media_downloads_total", "outcome" => "retry").increment(1);
                    if job.attempts >= PATIENCE
                        && attachments::mark_failed(&self.db, attachment_id, &error.to_string()).await?
                    {
                        tracing::warn!(%attachment_id, %error, "media still missing; message forwarded without it");
                    }
                    Err(match error {
                        FetchError::Graph(graph) => graph.into(),
                        other => JobError::retry(other),
                    })
                }
            }
        })
    }
}

impl Download {
    async fn fetch(&self, media_id: &str) -> Result<(String, String, Vec<u8>), FetchError> {
        let info: MediaInfo = self
            .graph
            .get(&format!("/{media_id}"), &[])
            .await
            .map_err(|e| match &e {
                GraphError::Api {
                    status: 404 | 410, ..
                }
                | GraphError::Api { code: 100, .. } => {
                    FetchError::Unavailable(format!("WhatsApp no longer has this media: {e}"))
                }
                _ => FetchError::Graph(e),
            })?;
        let announced = info
            .file_size
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
        if announced.is_some_and(|size| size > MAX_BYTES) {
            return Err(FetchError::Unavailable(format!(
                "file of {} bytes exceeds the {MAX_BYTES}-byte limit",
                announced.unwrap_or_default()
            )));
        }
        self.check_host(&info.url)?;
        let mut response = self
            .graph
            .authorized(reqwest::Method::GET, &info.url)
            .send()
            .await
            .map_err(|e| FetchError::Transient(format!("download failed: {}", e.without_url())))?;
        if !response.status().is_success() {
            // 401/403/404 from the CDN mean the URL expired; the next attempt gets a new one.
            return Err(FetchError::Transient(format!(
                "download answered HTTP {}",
                response.status()
            )));
        }
        let mut bytes = Vec::with_capacity(announced.unwrap_or(0).min(MAX_BYTES) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Transient(format!("download interrupted: {}", e.without_url())))?
        {
            if (bytes.len() + chunk.len()) as u64 > MAX_BYTES {
                return Err(FetchError::Unavailable(format!(
                    "file exceeds the {MAX_BYTES}-byte limit"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = info.sha256.as_deref().filter(|s| s.len() == 64)
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(FetchError::Transient(format!(
                "sha256 mismatch: WhatsApp announced {expected}, got {digest}"
            )));
        }
        if announced.is_some_and(|size| size != bytes.len() as u64) {
            return Err(FetchError::Transient(format!(
                "size mismatch: WhatsApp announced {} bytes, got {}",
                announced.unwrap_or_default(),
                bytes.len()
            )));
        }
        let mime_type = info
            .mime_type
            .unwrap_or_else(|| "application/octet-stream".into());
        Ok((mime_type, digest, bytes))
    }

    /// Only Meta's media hosts (or the configured Graph host) get our token.
    fn check_host(&self, url: &str) -> Result<(), FetchError> {
        let parsed =
            url::Url::parse(url).map_err(|_| FetchError::Transient("media URL is not a URL".into()))?;
        let host = parsed.host_str().unwrap_or_default();
        let graph_host = self.graph_host.as_deref() == Some(host);
        let meta_host = parsed.scheme() == "https" && MEDIA_HOST_SUFFIXES.iter().any(|s| host.ends_with(s));
        if graph_host || meta_host {
            Ok(())
        } else {
            Err(FetchError::Unavailable(format!(
                "media URL host {host:?} is not a WhatsApp media host"
            )))
        }
    }

    async fn redeliver(&self, message_id: Uuid, attachment_id: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if let Some(conversation_id) = messages::conversation_of(&mut tx, message_id).await? {
            delivery::enqueue(
                &mut tx,
                message_id,
                conversation_id,
                &format!("media:{attachment_id}"),
            )
            .await?;
        }
        tx.commit().await
    }
}
