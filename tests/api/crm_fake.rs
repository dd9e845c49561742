//! A fake of Pipedrive's CRM API (persons, deals, leads, notes) on the test app's Pipedrive
//! server, and an install whose Channels API is retired.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::TestApp;
use crate::pipedrive_fake::{CODE, install_with, mount_consent};

/// The customer of most timeline tests: a Brazilian mobile with the ninth digit.
pub const CUSTOMER: &str = "5511987654321";
/// The Pipedrive person that has the customer's number.
pub const PERSON_ID: i64 = 4242;
/// Scopes of a timeline install.
pub const TIMELINE_SCOPES: &str =
    "base,messengers-integration,contacts:full,deals:full,leads:full,search:read";

/// Installs with a Channels API that answers 410, so the numbers are in timeline mode.
pub async fn installed_after_retirement(app: &TestApp) {
    mount_consent(app, TIMELINE_SCOPES).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/channels"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({"success": false, "error": "Gone"})))
        .mount(&app.pipedrive)
        .await;
    let response = install_with(app, CODE).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// `GET /api/v2/persons/search?term=<term>` finds `ids`.
pub async fn mount_search(server: &MockServer, term: &str, ids: &[i64]) {
    let items: Vec<Value> = ids
        .iter()
        .map(|id| json!({"result_score": 1.0, "item": {"id": id, "type": "person", "name": "Ana", "phones": [term]}}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/api/v2/persons/search"))
        .and(query_param("term", term))
        .and(query_param("fields", "phone"))
        .and(query_param("exact_match", "true"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {"items": items}})),
        )
        .with_priority(1)
        .mount(server)
        .await;
}

/// `GET /api/v2/deals?person_id=<person>&status=open` lists `deals`.
pub async fn mount_deals(server: &MockServer, person_id: i64, deals: &[i64]) {
    let data: Vec<Value> = deals
        .iter()
        .map(|id| json!({"id": id, "status": "open"}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/api/v2/deals"))
        .and(query_param("person_id", person_id.to_string()))
        .and(query_param("status", "open"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": data})))
        .with_priority(1)
        .mount(server)
        .await;
}

/// `GET /api/v1/leads?person_id=<person>` lists `leads`.
pub async fn mount_leads(server: &MockServer, person_id: i64, leads: &[&str]) {
    let data: Vec<Value> = leads
        .iter()
        .map(|id| json!({"id": id, "title": "Lead", "is_archived": false}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/api/v1/leads"))
        .and(query_param("person_id", person_id.to_string()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": data})))
        .with_priority(1)
        .mount(server)
        .await;
}

/// Answers with the next id from 9001 on, as Pipedrive creates notes and persons.
struct Created {
    next: AtomicI64,
}

impl Respond for Created {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut data: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        data["id"] = json!(id);
        ResponseTemplate::new(201).set_body_json(json!({"success": true, "data": data}))
    }
}

/// A CRM where nobody has any number and nobody has deals or leads (unless mounted before with
/// a higher priority), persons are created from id 501 and notes from 9001 on, and notes can be
/// rewritten.
pub async fn mount_crm(server: &MockServer) {
    for (verb, route) in [
        ("GET", "/api/v2/persons/search"),
        ("GET", "/api/v2/deals"),
        ("GET", "/api/v1/leads"),
    ] {
        let data = if route.ends_with("search") {
            json!({"items": []})
        } else {
            json!([])
        };
        Mock::given(method(verb))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": data})))
            .with_priority(10)
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/api/v2/persons"))
        .respond_with(Created {
            next: AtomicI64::new(501),
        })
        .with_priority(10)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/notes"))
        .respond_with(Created {
            next: AtomicI64::new(9001),
        })
        .with_priority(10)
        .mount(server)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex(r"^/api/v1/notes/\d+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {}})))
        .with_priority(10)
        .mount(server)
        .await;
}

/// Requests with `verb` whose path starts with `prefix`, in arrival order.
pub async fn calls(server: &MockServer, verb: &str, prefix: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path().starts_with(prefix))
        .collect()
}

/// The JSON bodies of the notes created so far.
pub async fn created_notes(server: &MockServer) -> Vec<Value> {
    calls(server, "POST", "/api/v1/notes")
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// The note rewrites so far: (note id, body).
pub async fn rewritten_notes(server: &MockServer) -> Vec<(i64, Value)> {
    calls(server, "PUT", "/api/v1/notes/")
        .await
        .iter()
        .map(|r| {
            let id = r.url.path().rsplit('/').next().unwrap().parse().unwrap();
            (id, serde_json::from_slice(&r.body).unwrap())
        })
        .collect()
}
