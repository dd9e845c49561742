//! Approved message templates: synced from the business account (all pages), cached in
//! PostgreSQL, refreshed after a TTL or when Meta reports a template change, and matched against
//! text typed in Pipedrive (the inbox inserts a template's text with its placeholders filled).

use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::store::templates::{self, Template};
use crate::whatsapp::graph::{GraphClient, GraphError};

/// How long the cached list is trusted without a change notice from Meta.
pub const TTL: Duration = Duration::from_secs(3600);

/// Fields requested per template.
const FIELDS: &str = "id,name,status,category,language,parameter_format,components";

/// Syncing failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The Graph API refused or failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Storing the list failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A `paging.next` link pointed away from the Graph API (our token is never sent there).
    #[error("refusing to follow a paging link to another host")]
    ForeignPagingLink,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Value>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<String>,
}

/// The approved templates, refreshed first when the cache is stale. When Meta cannot be reached
/// the cached list is served (and the failure logged).
pub async fn approved(db: &PgPool, graph: &GraphClient, waba_id: &str) -> Result<Vec<Template>, sqlx::Error> {
    let fresh = templates::fresh_since(db)
        .await?
        .is_some_and(|at| (Utc::now() - at).to_std().is_ok_and(|age| age < TTL));
    if !fresh && let Err(error) = sync(db, graph, waba_id).await {
        tracing::warn!(%error, "template sync failed; serving the cached list");
    }
    templates::all(db).await
}

/// Fetches every page of the account's templates and stores the approved ones.
#[tracing::instrument(skip_all)]
pub async fn sync(db: &PgPool, graph: &GraphClient, waba_id: &str) -> Result<usize, SyncError> {
    let first = graph.url(&format!("/{waba_id}/message_templates"));
    let origin = url::Url::parse(&first).ok().map(|u| u.origin());
    let mut request = graph
        .authorized(reqwest::Method::GET, &first)
        .query(&[("fields", FIELDS), ("limit", "100")]);
    let mut found = Vec::new();
    loop {
        let page: Page = graph.send_json(request).await?;
        found.extend(page.data.iter().filter_map(approved_template));
        let Some(next) = page.paging.and_then(|p| p.next) else {
            break;
        };
        if url::Url::parse(&next).ok().map(|u| u.origin()) != origin {
            return Err(SyncError::ForeignPagingLink);
        }
        request = graph.authorized(reqwest::Method::GET, &next);
    }
    let mut tx = db.begin().await?;
    templates::replace_all(&mut tx, &found).await?;
    tx.commit().await?;
    tracing::info!(approved = found.len(), "templates synced");
    Ok(found.len())
}

fn approved_template(value: &Value) -> Option<Template> {
    if !value["status"].as_str()?.eq_ignore_ascii_case("APPROVED") {
        return None;
    }
    let components = value["components"].clone();
    let body_text = components
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("BODY")))?["text"]
        .as_str()?
        .to_string();
    Some(Template {
        id: value["id"].as_str()?.to_string(),
        name: value["name"].as_str()?.to_string(),
        language: value["language"].as_str()?.to_string(),
        body_text,
        components,
    })
}

/// A template whose text matched, with the values of its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateMatch {
    /// The template.
    pub template: Template,
    /// Placeholder names (`1`, `2`, … or named) in body order.
    pub names: Vec<String>,
    /// The values, in the same order.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Placeholder(String),
}

fn segments(body: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            out.push(Segment::Text(rest[..start + 2].to_string()));
            rest = &rest[start + 2..];
            continue;
        }
        if start > 0 {
            out.push(Segment::Text(rest[..start].to_string()));
        }
        out.push(Segment::Placeholder(name.to_string()));
        rest = &rest[start + 4 + len..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_string()));
    }
    // Adjacent literal pieces (from skipped braces) are one literal.
    out.into_iter().fold(Vec::new(), |mut acc, seg| {
        match (acc.last_mut(), seg) {
            (Some(Segment::Text(prev)), Segment::Text(next)) => prev.push_str(&next),
            (_, seg) => acc.push(seg),
        }
        acc
    })
}

/// Values for `segments` that make them spell `text`, preferring the shortest value for each
/// placeholder; `None` when they cannot.
fn fill(segments: &[Segment], text: &str) -> Option<Vec<String>> {
    match segments.split_first() {
        None => text.is_empty().then(Vec::new),
        Some((Segment::Text(literal), rest)) => fill(rest, text.strip_prefix(literal.as_str())?),
        Some((Segment::Placeholder(_), rest)) => {
            let candidates: Vec<usize> = match rest.first() {
                Some(Segment::Text(next)) => text.match_indices(next.as_str()).map(|(i, _)| i).collect(),
                _ => vec![text.len()],
            };
            candidates.into_iter().filter(|&end| end > 0).find_map(|end| {
                let value = &text[..end];
                if value.trim().is_empty() {
                    return None;
                }
                let mut values = fill(rest, &text[end..])?;
                values.insert(0, value.to_string());
                Some(values)
            })
        }
    }
}

/// The placeholder names of a template's body, each once, in the order they first appear.
pub fn placeholders(template: &Template) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for segment in segments(template.body_text.trim()) {
        if let Segment::Placeholder(name) = segment
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

/// A template's body with its placeholders replaced by `values` (by name); the name of the
/// first placeholder without a non-blank value is the error.
pub fn fill_in(
    template: &Template,
    values: &std::collections::HashMap<String, String>,
) -> Result<String, String> {
    segments(template.body_text.trim())
        .into_iter()
        .map(|segment| match segment {
            Segment::Text(text) => Ok(text),
            Segment::Placeholder(name) => values
                .get(&name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or(name),
        })
        .collect()
}

/// Only templates whose header and buttons need no parameters can be sent from plain text.
fn sendable_from_text(template: &Template) -> bool {
    template.components.as_array().is_some_and(|components| {
        components.iter().all(
            |c| match c["type"].as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("HEADER") => {
                    c["format"]
                        .as_str()
                        .is_none_or(|f| f.eq_ignore_ascii_case("TEXT"))
                        && !c["text"].as_str().unwrap_or("").contains("{{")
                }
                Some("BUTTONS") => !c.to_string().contains("{{"),
                Some("BODY" | "FOOTER") => true,
                _ => false,
            },
        )
    })
}

/// The template (with values) whose body, placeholders filled in, is exactly `text`. When
/// several match, the one with the most fixed text wins.
pub fn find_match(candidates: &[Template], text: &str) -> Option<TemplateMatch> {
    let text = text.trim();
    candidates
        .iter()
        .filter(|t| sendable_from_text(t))
        .filter_map(|t| {
            let segs = segments(t.body_text.trim());
            let values = fill(&segs, text)?;
            let names = segs
                .iter()
                .filter_map(|s| match s {
                    Segment::Placeholder(n) => Some(n.clone()),
                    Segment::Text(_) => None,
                })
                .collect();
            let fixed: usize = segs
                .iter()
                .map(|s| match s {
                    Segment::Text(l) => l.len(),
                    Segment::Placeholder(_) => 0,
                })
                .sum();
            Some((
                fixed,
                TemplateMatch {
                    template: t.clone(),
                    names,
                    values,
                },
            ))
        })
        .max_by_key(|(fixed, _)| *fixed)
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(name: &str, body: &str, extra: Value) -> Template {
        let mut components = vec![json!({"type": "BODY", "text": body})];
        if !extra.is_null() {
            components.push(extra);
        }
        Template {
            id: format!("id-{name}"),
            name: name.into(),
            language: "en_US".into(),
            body_text: body.into(),
            components: Value::Array(components),
        }
    }

    #[test]
    fn placeholders_are_extracted_in_order() {
        let t = template("order", "Hello {{1}}, your order {{2}} has shipped.", Value::Null);
        let m = find_match(&[t], "Hello Ana Souza, your order #42 has shipped.").unwrap();
        assert_eq!(m.values, ["Ana Souza", "#42"]);
        assert_eq!(m.names, ["1", "2"]);
    }

    #[test]
    fn named_placeholders_and_placeholder_at_the_end() {
        let t = template("named", "Hi {{customer_name}}, code: {{code}}", Value::Null);
        let m = find_match(&[t], "Hi Jonas, code: 1234").unwrap();
        assert_eq!(m.names, ["customer_name", "code"]);
        assert_eq!(m.values, ["Jonas", "1234"]);
    }

    #[test]
    fn non_matching_or_empty_values_do_not_match() {
        let t = template("order", "Hello {{1}}, your order {{2}} has shipped.", Value::Null);
        assert!(find_match(std::slice::from_ref(&t), "Hello Ana, your order has shipped.").is_none());
        assert!(find_match(std::slice::from_ref(&t), "Hello , your order 1 has shipped.").is_none());
        assert!(find_match(&[t], "Something else").is_none());
    }

    #[test]
    fn the_most_specific_template_wins_and_media_headers_are_skipped() {
        let loose = template("loose", "{{1}}", Value::Null);
        let exact = template("exact", "Your appointment is {{1}}.", Value::Null);
        let media = template(
            "media",
            "Your appointment is {{1}}.",
            json!({"type": "HEADER", "format": "IMAGE"}),
        );
        let m = find_match(&[loose, media, exact], "Your appointment is tomorrow.").unwrap();
        assert_eq!(m.template.name, "exact");
    }

    #[test]
    fn literal_braces_are_text() {
        let t = template("braces", "Use {{ }} or {{1}}", Value::Null);
        assert_eq!(find_match(&[t], "Use {{ }} or that").unwrap().values, ["that"]);
    }

    #[test]
    fn filled_templates_are_recognised_as_themselves() {
        let t = template("order", "Hello {{1}}, order {{2}} is ready.", Value::Null);
        assert_eq!(placeholders(&t), ["1", "2"]);
        let values = [("1", "Ana"), ("2", " #42 ")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let text = fill_in(&t, &values).unwrap();
        assert_eq!(text, "Hello Ana, order #42 is ready.");
        assert_eq!(find_match(std::slice::from_ref(&t), &text).unwrap().template, t);
        let missing = [("1".to_string(), "Ana".to_string())].into_iter().collect();
        assert_eq!(fill_in(&t, &missing), Err("2".to_string()));
    }

    #[test]
    fn only_approved_templates_with_a_body_are_kept() {
        let ok = json!({"id": "1", "name": "a", "language": "de", "status": "APPROVED",
            "components": [{"type": "BODY", "text": "Hallo {{1}}"}]});
        let pending = json!({"id": "2", "name": "b", "language": "de", "status": "PENDING",
            "components": [{"type": "BODY", "text": "x"}]});
        assert_eq!(approved_template(&ok).unwrap().body_text, "Hallo {{1}}");
        assert!(approved_template(&pending).is_none());
    }
}
