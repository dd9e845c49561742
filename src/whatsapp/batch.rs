//! What the ingest loop carries from one notification to the next of a batch: the channels and
//! customers already looked up, and the plain messages waiting to be stored together. A batch
//! of a few hundred text messages, new customers among them, then costs a handful of statements
//! instead of a few per message. The channels and customers found are also carried from one
//! batch to the next ([`Known`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::payload::Notification;
use crate::store::channels;
use crate::store::contacts::{self, Identity};
use crate::store::conversations::{self, NewCustomer};
use crate::store::jobs::{Job, Taker};
use crate::store::messages::{self, Received};

/// A customer as one identity of one channel names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CustomerKey {
    channel_id: Uuid,
    wa_id: Option<String>,
    bsuid: Option<String>,
}

impl CustomerKey {
    fn new(channel_id: Uuid, who: &Identity<'_>) -> Self {
        Self {
            channel_id,
            wa_id: who.wa_id.map(str::to_string),
            bsuid: who.bsuid.map(str::to_string),
        }
    }
}

/// A customer with a conversation, as stored.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The contact.
    pub contact_id: Uuid,
    /// Its conversation on the channel.
    pub conversation_id: Uuid,
    wa_id: Option<String>,
    bsuid: Option<String>,
    profile_name: Option<String>,
}

/// A channel as the ingest needs it: its id and number, which stay as they are for as long as
/// the row exists.
#[derive(Debug, Clone)]
pub struct KnownChannel {
    /// The channel.
    pub id: Uuid,
    /// Its WhatsApp phone number id.
    pub phone_number_id: String,
}

/// What earlier batches found, which the ingest loop carries from one batch to the next: the
/// channels by phone number id, and the customers with their conversations. A batch then
/// looks up only the numbers and customers it has not met before, where a statement for its
/// customers and one for its channel came before anything else in every batch. The ids of a
/// channel, of a contact and of its conversation never change while their rows exist; a row
/// removed behind the loop's back makes the batch fail on its foreign keys, and a batch that
/// fails starts again with nothing known. Numbers without a channel and unknown customers are
/// asked again, as they may be added meanwhile.
#[derive(Debug, Default)]
pub struct Known {
    channels: HashMap<String, KnownChannel>,
    customers: HashMap<CustomerKey, Customer>,
}

/// Most customers [`Known`] keeps; past this it starts again empty (a few MB at most).
const KNOWN_CUSTOMERS: usize = 10_000;

/// The state of one batch, valid inside its transaction only.
#[derive(Debug, Default)]
pub struct Batch {
    channels: HashMap<String, KnownChannel>,
    /// Phone number ids without a channel; asked again by the next batch, as one may be added.
    no_channel: HashSet<String>,
    customers: HashMap<CustomerKey, Customer>,
    /// Identities the prefetch found no contact for.
    unknown: HashSet<CustomerKey>,
    /// Customers given ids in this batch, stored at the next flush.
    created: Vec<NewCustomer>,
    deferred: Vec<Received>,
    /// Who the deliveries of the stored messages may be leased to at once.
    taker: Option<Taker>,
    /// Deliveries leased to `taker`, to be handed to it once the batch commits.
    taken: Vec<Job>,
}

impl Batch {
    /// A batch whose messages' deliveries are leased to `taker` as they are stored, when nothing
    /// of their conversation is waiting (see [`messages::insert_received`]).
    pub fn taken_by(taker: Taker) -> Self {
        Self {
            taker: Some(taker),
            ..Self::default()
        }
    }

    /// The batch, knowing the channels and customers of `known` without looking them up.
    pub fn knowing(mut self, known: Known) -> Self {
        self.channels = known.channels;
        self.customers = known.customers;
        self
    }

    /// What this batch knew or found, for the next; call it once the batch is committed.
    pub fn into_known(self) -> Known {
        let mut customers = self.customers;
        if customers.len() > KNOWN_CUSTOMERS {
            customers.clear();
        }
        Known {
            channels: self.channels,
            customers,
        }
    }

    /// The deliveries leased to the taker so far; the caller runs them once the batch committed.
    pub fn take_leased(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.taken)
    }

    /// The channel of a phone number id (`None`: not one of ours), read at most once per batch.
    pub async fn channel(
        &mut self,
        conn: &mut PgConnection,
        phone_number_id: &str,
    ) -> Result<Option<KnownChannel>, sqlx::Error> {
        if let Some(channel) = self.channels.get(phone_number_id) {
            return Ok(Some(channel.clone()));
        }
        if self.no_channel.contains(phone_number_id) {
            return Ok(None);
        }
        let Some(channel) = channels::find_by_phone_number_id(&mut *conn, phone_number_id).await? else {
            self.no_channel.insert(phone_number_id.to_string());
            return Ok(None);
        };
        let channel = KnownChannel {
            id: channel.id,
            phone_number_id: channel.phone_number_id,
        };
        self.channels.insert(phone_number_id.to_string(), channel.clone());
        Ok(Some(channel))
    }

    /// Looks up, in one round trip, the customers who wrote (or, for echoes, received) the
    /// messages of `notifications`, with their conversations.
    pub async fn prefetch(
        &mut self,
        conn: &mut PgConnection,
        notifications: &[Notification],
    ) -> Result<(), sqlx::Error> {
        let mut keys: Vec<CustomerKey> = Vec::new();
        for value in notifications
            .iter()
            .flat_map(|n| &n.entry)
            .flat_map(|e| &e.changes)
            .filter(|c| matches!(c.field.as_str(), "messages" | "smb_message_echoes"))
            .map(|c| &c.value)
        {
            let Some(phone_number_id) = value["metadata"]["phone_number_id"].as_str() else {
                continue;
            };
            let Some(channel) = self.channel(conn, phone_number_id).await? else {
                continue;
            };
            let text = |item: &Value, key: &str| item[key].as_str().map(str::to_string);
            let items = |key: &str| value[key].as_array().into_iter().flatten();
            let inbound = items("messages").map(|m| (text(m, "from"), text(m, "from_user_id")));
            let echoes = items("message_echoes").map(|m| (text(m, "to"), None));
            for (wa_id, bsuid) in inbound.chain(echoes) {
                let key = CustomerKey {
                    channel_id: channel.id,
                    wa_id,
                    bsuid,
                };
                if (key.wa_id.is_some() || key.bsuid.is_some())
                    && !self.customers.contains_key(&key)
                    && !keys.contains(&key)
                {
                    keys.push(key);
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let channel_ids: Vec<Uuid> = keys.iter().map(|k| k.channel_id).collect();
        let wa_ids: Vec<Option<String>> = keys.iter().map(|k| k.wa_id.clone()).collect();
        let bsuids: Vec<Option<String>> = keys.iter().map(|k| k.bsuid.clone()).collect();
        let mut unknown: Vec<bool> = vec![true; keys.len()];
        for found in contacts::find_many(conn, &channel_ids, &wa_ids, &bsuids).await? {
            let Some(i) = usize::try_from(found.n - 1).ok().filter(|&i| i < keys.len()) else {
                continue;
            };
            unknown[i] = false;
            let (key, Some(conversation_id)) = (&keys[i], found.conversation_id) else {
                continue;
            };
            self.customers.insert(
                key.clone(),
                Customer {
                    contact_id: found.contact_id,
                    conversation_id,
                    wa_id: found.wa_id,
                    bsuid: found.bsuid,
                    profile_name: found.profile_name,
                },
            );
        }
        self.unknown.extend(
            keys.into_iter()
                .zip(unknown)
                .filter_map(|(key, unknown)| unknown.then_some(key)),
        );
        Ok(())
    }

    /// Whether the prefetch found no contact for `who`, and none was remembered since. Another
    /// identity of the same person may have been stored meanwhile, so creating them can still
    /// meet a conflict.
    pub fn unknown(&self, channel_id: Uuid, who: &Identity<'_>) -> bool {
        self.unknown.contains(&CustomerKey::new(channel_id, who))
    }

    /// The customer `who` names on `channel_id`, when known to have a conversation there and
    /// nothing stored about them would change (name, missing identifiers).
    pub fn customer(&self, channel_id: Uuid, who: &Identity<'_>) -> Option<&Customer> {
        let customer = self.customers.get(&CustomerKey::new(channel_id, who))?;
        let same_name = who
            .profile_name
            .filter(|name| !name.is_empty())
            .is_none_or(|name| customer.profile_name.as_deref() == Some(name));
        let complete = (who.wa_id.is_none() || customer.wa_id.is_some())
            && (who.bsuid.is_none() || customer.bsuid.is_some());
        (same_name && complete).then_some(customer)
    }

    /// Contact and conversation ids for `who`, whom the prefetch did not find, on `channel_id`
    /// (first activity at `at`). They are stored at the next [`flush`](Self::flush), with the
    /// batch's other new customers in one statement: a burst of new customers cost a statement
    /// each. Should one of `who`'s identifiers have been stored meanwhile, that flush fails and
    /// the batch is processed again event by event, which looks them up.
    pub fn create(&mut self, channel_id: Uuid, who: &Identity<'_>, at: DateTime<Utc>) -> (Uuid, Uuid) {
        // Someone new writing to two of our numbers in one batch is one contact.
        let contact_id = self
            .created
            .iter()
            .find(|c| c.wa_id.as_deref() == who.wa_id && c.bsuid.as_deref() == who.bsuid)
            .map_or_else(Uuid::now_v7, |c| c.contact_id);
        let conversation_id = Uuid::now_v7();
        self.created.push(NewCustomer {
            contact_id,
            conversation_id,
            channel_id,
            wa_id: who.wa_id.map(str::to_string),
            bsuid: who.bsuid.map(str::to_string),
            profile_name: who.profile_name.map(str::to_string),
            at,
        });
        self.remember(channel_id, who, contact_id, conversation_id);
        (contact_id, conversation_id)
    }

    /// Remembers a customer just found or created (and refreshed) the slow way.
    pub fn remember(
        &mut self,
        channel_id: Uuid,
        who: &Identity<'_>,
        contact_id: Uuid,
        conversation_id: Uuid,
    ) {
        let key = CustomerKey::new(channel_id, who);
        self.unknown.remove(&key);
        let before = self.customers.remove(&key);
        let before = before.as_ref();
        let customer = Customer {
            contact_id,
            conversation_id,
            wa_id: key.wa_id.clone().or_else(|| before.and_then(|b| b.wa_id.clone())),
            bsuid: key.bsuid.clone().or_else(|| before.and_then(|b| b.bsuid.clone())),
            profile_name: who
                .profile_name
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .or_else(|| before.and_then(|b| b.profile_name.clone())),
        };
        self.customers.insert(key, customer);
    }

    /// Queues a message to be stored at the next [`flush`](Self::flush).
    pub fn defer(&mut self, received: Received) {
        self.deferred.push(received);
    }

    /// Stores the new customers, then the deferred messages, each in one statement, before
    /// anything that could depend on them; returns the ids of the messages stored (the others
    /// were duplicates).
    pub async fn flush(&mut self, conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
        if !self.created.is_empty() {
            conversations::create_with_contacts(&mut *conn, &self.created).await?;
            self.created.clear();
        }
        if self.deferred.is_empty() {
            return Ok(Vec::new());
        }
        let stored = messages::insert_received(conn, &self.deferred, self.taker.as_mut()).await?;
        self.taken.extend(stored.taken);
        let stored = stored.ids;
        for received in self.deferred.drain(..) {
            if stored.contains(&received.id) {
                metrics::counter!("messages_received_total", "type" => received.kind, "direction" => received.direction.as_str())
                    .increment(1);
            } else {
                metrics::counter!("messages_duplicate_total").increment(1);
            }
        }
        Ok(stored)
    }

    /// Forgets the customers and deferred messages after a rollback (what was remembered may
    /// have been rolled back with it).
    pub fn forget(&mut self) {
        self.customers.clear();
        self.unknown.clear();
        self.created.clear();
        self.deferred.clear();
        self.taken.clear();
    }
}
