//! Writes one conversation-day into Pipedrive from our store: finds the person (and the deal or
//! lead) once per day, renders the transcript, and creates or rewrites its notes in place. A
//! note whose transcript did not change is not sent; a note deleted in Pipedrive is created
//! again, once per write.

use std::sync::Arc;

use chrono::{NaiveDate, TimeDelta};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::TimelineError;
use super::budget::{Allowance, Budget};
use super::crm::Crm;
use super::note::{self, Part, Parties, Viewer};
use super::person::{self, Person};
use crate::config::PublicUrl;
use crate::crypto::Keys;
use crate::phone;
use crate::pipedrive::wire;
use crate::pipedrive::{PipedriveClient, PipedriveError};
use crate::state::AppState;
use crate::store::channels::{self, Channel, ChannelMode};
use crate::store::timeline::{self as store, Context, Note};
use crate::store::{attachments, timeline};

/// What writing a conversation-day did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Notes created, rewritten, and left alone because their transcript had not changed.
    Notes {
        /// New notes.
        created: u32,
        /// Notes rewritten in place.
        updated: u32,
        /// Notes already up to date.
        unchanged: u32,
    },
    /// No person to write on (ambiguous, missing, or a customer without a phone number).
    NoPerson,
    /// Nothing to write (no messages, or the channel is disabled).
    Nothing,
    /// The company's daily budget is nearly spent: try again at this time.
    Paused(chrono::DateTime<chrono::Utc>),
}

/// A write and whether a change arrived while it ran (it must then run again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What was written.
    pub written: Written,
    /// A change of the day was reported after the write read the store.
    pub overtaken: bool,
}

/// Writes conversation-days into the CRM timeline. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    /// Database pool.
    pub db: PgPool,
    /// Pipedrive's API.
    pub pipedrive: PipedriveClient,
    /// Signs file links.
    pub keys: Arc<Keys>,
    /// Base URL of file links.
    pub public_url: PublicUrl,
    /// Create a person for a number none has.
    pub create_persons: bool,
    /// The API budget of each company.
    pub budget: Budget,
}

impl Writer {
    /// A writer with the service's shared clients and settings.
    pub fn new(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            pipedrive: state.pipedrive.clone(),
            keys: state.keys.clone(),
            public_url: state.config.public_url.clone(),
            create_persons: state.config.timeline.create_persons,
            budget: Budget::new(state.db.clone(), state.config.timeline.daily_token_budget),
        }
    }

    /// Brings the notes of `conversation_id` on `day` (UTC) up to date. `backfill` marks a
    /// replay of history, which yields to live conversations when the budget runs low.
    #[tracing::instrument(skip_all, fields(%conversation_id, %day))]
    pub async fn write_day(
        &self,
        conversation_id: Uuid,
        day: NaiveDate,
        backfill: bool,
    ) -> Result<Outcome, TimelineError> {
        let done = |written| Outcome {
            written,
            overtaken: false,
        };
        let Some(context) = store::context(&self.db, conversation_id).await? else {
            return Ok(done(Written::Nothing));
        };
        let Some(channel) = channels::find(&self.db, context.channel_id).await? else {
            return Ok(done(Written::Nothing));
        };
        if channel.mode == ChannelMode::Disabled {
            return Ok(done(Written::Nothing));
        }
        let (Some(installation_id), Some(company_id)) = (channel.installation_id, channel.company_id) else {
            return Err(TimelineError::Unregistered(channel.phone_number_id));
        };
        if let Allowance::PauseUntil(until) = self.budget.check(company_id, backfill).await? {
            return Ok(done(Written::Paused(until)));
        }
        store::ensure_day(&self.db, conversation_id, day, company_id).await?;
        let seen = store::day(&self.db, conversation_id, day)
            .await?
            .unwrap_or_default();
        let crm = Crm {
            pipedrive: &self.pipedrive,
            budget: &self.budget,
            installation_id,
            company_id,
        };
        let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        let messages =
            store::messages_between(&self.db, conversation_id, start, start + TimeDelta::days(1)).await?;
        let written = if messages.is_empty() {
            store::settle_day(&self.db, conversation_id, day, seen.version, None).await?;
            Written::Nothing
        } else {
            match self.links(&crm, &context, day, &seen).await? {
                None => Written::NoPerson,
                Some(links) => {
                    let files = attachments::of_rows(&self.db, &messages).await?;
                    let viewer = Viewer {
                        keys: &self.keys,
                        public_url: &self.public_url,
                    };
                    let parts = note::render(&parties(&context, &channel), day, &messages, &files, viewer);
                    let written = self.send(&crm, conversation_id, day, &links, &parts).await?;
                    store::settle_day(&self.db, conversation_id, day, seen.version, None).await?;
                    written
                }
            }
        };
        let now = store::day(&self.db, conversation_id, day)
            .await?
            .unwrap_or_default();
        Ok(Outcome {
            written,
            overtaken: now.version > seen.version,
        })
    }

    /// The person, deal and lead of the day's notes: decided at the day's first write and kept.
    async fn links(
        &self,
        crm: &Crm<'_>,
        context: &Context,
        day: NaiveDate,
        seen: &timeline::Day,
    ) -> Result<Option<NoteLinks>, TimelineError> {
        if let Some(person_id) = seen.person_id {
            return Ok(Some(NoteLinks {
                person_id,
                deal_id: seen.deal_id,
                lead_id: seen.lead_id.clone(),
            }));
        }
        let no_person = |reason| self.no_person(context.conversation_id, day, seen.version, reason);
        let Some(e164) = context.wa_id.as_deref().and_then(phone::from_wa_id) else {
            no_person("the customer has no phone number (username only)").await?;
            return Ok(None);
        };
        let name = context.profile_name.clone().unwrap_or_else(|| e164.clone());
        match person::resolve(crm, &self.db, &e164, &name, self.create_persons).await? {
            Person::Known(person_id) => {
                let links = person::links(crm, person_id).await?;
                let links = NoteLinks {
                    person_id,
                    deal_id: links.deal_id,
                    lead_id: links.lead_id,
                };
                store::set_links(
                    &self.db,
                    context.conversation_id,
                    day,
                    person_id,
                    links.deal_id,
                    links.lead_id.as_deref(),
                )
                .await?;
                Ok(Some(links))
            }
            Person::Ambiguous(_) => {
                no_person("several Pipedrive persons have the customer's number").await?;
                Ok(None)
            }
            Person::Missing => {
                no_person("no Pipedrive person has the customer's number (CREATE_PERSONS=false)").await?;
                Ok(None)
            }
        }
    }

    async fn no_person(
        &self,
        conversation_id: Uuid,
        day: NaiveDate,
        version: i64,
        reason: &'static str,
    ) -> Result<(), sqlx::Error> {
        tracing::info!(
            reason,
            "conversation kept here: no Pipedrive person to write it on"
        );
        store::settle_day(&self.db, conversation_id, day, version, Some(reason)).await
    }

    /// Creates or rewrites the note of each part whose content changed.
    async fn send(
        &self,
        crm: &Crm<'_>,
        conversation_id: Uuid,
        day: NaiveDate,
        links: &NoteLinks,
        parts: &[Part],
    ) -> Result<Written, TimelineError> {
        let existing = store::notes(&self.db, conversation_id, day).await?;
        let (mut created, mut updated, mut unchanged) = (0, 0, 0);
        for (index, part) in parts.iter().enumerate() {
            let index = index as i32;
            let hash = note::content_hash(&part.html, &links.hash_inputs());
            let known = existing.iter().find(|n| n.part == index);
            if known.is_some_and(|n| n.content_hash == hash) {
                unchanged += 1;
                continue;
            }
            if let Some(known) = known {
                match crm
                    .update_note(known.note_id, &json!({"content": part.html}))
                    .await
                {
                    Ok(()) => {
                        self.save(conversation_id, day, index, known.note_id, hash)
                            .await?;
                        updated += 1;
                        continue;
                    }
                    Err(TimelineError::Pipedrive(PipedriveError::Gone { status })) => {
                        tracing::info!(
                            status,
                            note_id = known.note_id,
                            "the note was deleted in Pipedrive; writing it again"
                        );
                        store::forget_note(&self.db, conversation_id, day, index).await?;
                    }
                    Err(error) => return Err(error),
                }
            }
            let note_id = match crm.create_note(&links.new_note(part)).await {
                Ok(note_id) => note_id,
                Err(TimelineError::Pipedrive(PipedriveError::Gone { status })) => {
                    // The person (or deal, lead) is gone: look them up again on the next try.
                    tracing::warn!(
                        status,
                        person_id = links.person_id,
                        "Pipedrive refused a note on a person it no longer has"
                    );
                    let mut conn = self.db.acquire().await?;
                    crate::store::crm::forget_person(&mut conn, crm.company_id, links.person_id).await?;
                    return Err(TimelineError::PersonGone);
                }
                Err(error) => return Err(error),
            };
            self.save(conversation_id, day, index, note_id, hash).await?;
            created += 1;
        }
        Ok(Written::Notes {
            created,
            updated,
            unchanged,
        })
    }

    async fn save(
        &self,
        conversation_id: Uuid,
        day: NaiveDate,
        part: i32,
        note_id: i64,
        content_hash: String,
    ) -> Result<(), sqlx::Error> {
        let note = Note {
            part,
            note_id,
            content_hash,
        };
        store::save_note(&self.db, conversation_id, day, &note).await
    }
}

/// What a day's notes are attached to.
#[derive(Debug, Clone)]
struct NoteLinks {
    person_id: i64,
    deal_id: Option<i64>,
    lead_id: Option<String>,
}

impl NoteLinks {
    fn hash_inputs(&self) -> [String; 3] {
        [
            self.person_id.to_string(),
            self.deal_id.map(|d| d.to_string()).unwrap_or_default(),
            self.lead_id.clone().unwrap_or_default(),
        ]
    }

    /// The body of a new note: its content, its links, and the time of its first message.
    fn new_note(&self, part: &Part) -> Value {
        let mut body = json!({
            "content": part.html,
            "person_id": self.person_id,
            "add_time": part.first_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        });
        if let Some(deal_id) = self.deal_id {
            body["deal_id"] = json!(deal_id);
        }
        if let Some(lead_id) = &self.lead_id {
            body["lead_id"] = json!(lead_id);
        }
        body
    }
}

fn parties(context: &Context, channel: &Channel) -> Parties {
    Parties {
        customer: wire::customer_name(
            context.profile_name.as_deref(),
            context.wa_id.as_deref(),
            context.bsuid.as_deref(),
        ),
        customer_phone: context.wa_id.as_deref().and_then(phone::from_wa_id),
        business: wire::business_name(channel),
    }
}
