//! The Pipedrive person behind a customer's number: our cached link first, else Pipedrive's
//! exact phone search over the number's national variants (with and without `+`), else a new
//! person when creating them is allowed. Several persons with the number is ambiguous: none is
//! picked, nothing is created, and the conversation stays with us until someone tidies the
//! persons up in Pipedrive (the search is repeated after a while).
//!
//! And what a person's notes are linked to besides the person: the one open deal, else the one
//! open lead; never a guess among several.

use chrono::{TimeDelta, Utc};
use sqlx::PgPool;

use super::TimelineError;
use super::crm::Crm;
use crate::phone;
use crate::store::crm::{self as store, PersonState};

/// How long an ambiguous or missing person is remembered before Pipedrive is asked again.
const RECHECK_AFTER: TimeDelta = TimeDelta::hours(1);

/// Who a number belongs to in Pipedrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    /// This person (found, cached or created).
    Known(i64),
    /// Several persons have the number.
    Ambiguous(Vec<i64>),
    /// No person has it, and persons are not created.
    Missing,
}

/// Finds (or creates) the person with the phone number `e164` in the CRM's company; `name` names
/// a created person.
#[tracing::instrument(skip_all, fields(company_id = crm.company_id))]
pub async fn resolve(
    crm: &Crm<'_>,
    db: &PgPool,
    e164: &str,
    name: &str,
    create: bool,
) -> Result<Person, TimelineError> {
    if let Some(link) = store::person(db, crm.company_id, e164).await? {
        let fresh = Utc::now() - link.checked_at < RECHECK_AFTER;
        match (link.state, link.person_id) {
            (PersonState::Linked, Some(id)) => return Ok(Person::Known(id)),
            (PersonState::Ambiguous, _) if fresh => return Ok(Person::Ambiguous(link.candidates)),
            (PersonState::Missing, _) if fresh && !create => return Ok(Person::Missing),
            _ => {}
        }
    }
    for variant in phone::variants(e164) {
        for term in [variant.clone(), phone::digits(&variant)] {
            let ids = crm.search_persons(&term).await?;
            match ids.as_slice() {
                [] => continue,
                [id] => {
                    store::save_person(db, crm.company_id, e164, PersonState::Linked, Some(*id), &[]).await?;
                    return Ok(Person::Known(*id));
                }
                several => {
                    tracing::warn!(
                        persons = ?several,
                        "several Pipedrive persons have the customer's number; none is picked"
                    );
                    store::save_person(db, crm.company_id, e164, PersonState::Ambiguous, None, several)
                        .await?;
                    return Ok(Person::Ambiguous(several.to_vec()));
                }
            }
        }
    }
    if !create {
        store::save_person(db, crm.company_id, e164, PersonState::Missing, None, &[]).await?;
        return Ok(Person::Missing);
    }
    let id = crm.create_person(name, e164).await?;
    tracing::info!(person_id = id, "created a Pipedrive person for the customer");
    store::save_person(db, crm.company_id, e164, PersonState::Linked, Some(id), &[]).await?;
    Ok(Person::Known(id))
}

/// What a person's notes are linked to besides the person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// The person's only open deal.
    pub deal_id: Option<i64>,
    /// The person's only open lead, when there is no single open deal.
    pub lead_id: Option<String>,
}

/// The deal or lead a note about `person_id` also belongs to.
pub async fn links(crm: &Crm<'_>, person_id: i64) -> Result<Links, TimelineError> {
    if let [deal] = crm.open_deals(person_id).await?.as_slice() {
        return Ok(Links {
            deal_id: Some(*deal),
            lead_id: None,
        });
    }
    let lead_id = match crm.open_leads(person_id).await?.as_slice() {
        [lead] => Some(lead.clone()),
        _ => None,
    };
    Ok(Links {
        deal_id: None,
        lead_id,
    })
}
