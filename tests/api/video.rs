//! The video calling app extension as Pipedrive uses it: postMeeting, patchUpdateMeeting and
//! deleteMeeting on a user provider link, with meetings in Jitsi rooms.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pipedrive_whatsapp::video::jitsi::{AUDIENCE, JoinClaims, TOKEN_MARGIN};
use reqwest::Response;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    CLIENT_ID, CLIENT_SECRET, TestApp, assert_error, spawn_app, spawn_app_on_database, spawn_app_with,
};

/// A meeting as the database holds it.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    topic: String,
    start_time: DateTime<Utc>,
    duration_minutes: i32,
    room: String,
    deleted: bool,
}

/// A user provider link, as the install flow registers it.
async fn insert_link(app: &TestApp) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO video_links (id, company_id, user_id) VALUES ($1, 7720311, 13554862)")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    id
}

async fn stored(app: &TestApp, meeting_id: &str) -> Stored {
    let (topic, start_time, duration_minutes, room, deleted): (String, DateTime<Utc>, i32, String, bool) =
        sqlx::query_as(
            "SELECT topic, start_time, duration_minutes, room, deleted_at IS NOT NULL FROM meetings WHERE id = $1",
        )
        .bind(meeting_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    Stored {
        topic,
        start_time,
        duration_minutes,
        room,
        deleted,
    }
}

fn meetings_url(link: impl std::fmt::Display) -> String {
    format!("/api/video/{link}/meetings")
}

fn meeting_url(link: impl std::fmt::Display, meeting_id: &str) -> String {
    format!("/api/video/{link}/meetings/{meeting_id}")
}

fn demo() -> Value {
    json!({"topic": "Demo call with Jonas Weber", "start_time": "2026-12-01 14:30", "duration": 45})
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
}

impl TestApp {
    /// A request as Pipedrive makes it: HTTP Basic with the app's client id and secret.
    fn pipedrive(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
    }

    async fn post_meeting(&self, link: impl std::fmt::Display, body: &Value) -> Response {
        self.pipedrive(reqwest::Method::POST, &meetings_url(link))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn patch_meeting(&self, link: impl std::fmt::Display, meeting_id: &str, body: &Value) -> Response {
        self.pipedrive(reqwest::Method::PATCH, &meeting_url(link, meeting_id))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn delete_meeting(&self, link: impl std::fmt::Display, meeting_id: &str) -> Response {
        self.pipedrive(reqwest::Method::DELETE, &meeting_url(link, meeting_id))
            .send()
            .await
            .unwrap()
    }

    /// Creates the demo meeting and returns its id.
    async fn create_demo_meeting(&self, link: Uuid) -> String {
        let data = self.create_meeting(link, &demo()).await;
        data["meeting_id"].as_str().unwrap().to_string()
    }

    /// Meetings stored, deleted or not.
    async fn meeting_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM meetings")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Creates a meeting and returns the `data` of the answer.
    async fn create_meeting(&self, link: Uuid, body: &Value) -> Value {
        let response = self.post_meeting(link, body).await;
        assert_eq!(response.status(), 201);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["success"], true, "{answer}");
        answer["data"].clone()
    }
}

async fn assert_no_content(response: Response) {
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn post_meeting_answers_201_with_a_jitsi_link_and_an_invitation() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;

    let data = app.create_meeting(link, &demo()).await;
    let meeting_id = data["meeting_id"].as_str().unwrap();
    let join_url = data["join_url"].as_str().unwrap();
    let invitation = data["invitation"].as_str().unwrap();
    assert!(data.get("password").is_none(), "{data}");

    let row = stored(&app, meeting_id).await;
    assert_eq!(join_url, format!("https://meet.example.org/{}", row.room));
    assert!(
        row.room.starts_with("demo-call-with-jonas-weber-"),
        "{}",
        row.room
    );
    assert_eq!(
        row,
        Stored {
            topic: "Demo call with Jonas Weber".into(),
            start_time: at(14, 30),
            duration_minutes: 45,
            room: row.room.clone(),
            deleted: false,
        }
    );
    for part in [
        "Demo call with Jonas Weber",
        "2026-12-01 14:30 UTC",
        "45 min",
        join_url,
    ] {
        assert!(invitation.contains(part), "{part:?} missing from {invitation:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn rooms_are_unguessable_and_never_shared_between_meetings() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let first = app.create_meeting(link, &demo()).await;
    let second = app.create_meeting(link, &demo()).await;
    assert_ne!(first["meeting_id"], second["meeting_id"]);
    assert_ne!(first["join_url"], second["join_url"]);
    for data in [first, second] {
        let room = stored(&app, data["meeting_id"].as_str().unwrap()).await.room;
        let random = room.rsplit('-').next().unwrap();
        // 128 bits in hex.
        assert!(
            random.len() >= 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
            "{room}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_manifest_urls_reach_the_meeting_routes() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let manifest: Value = app
        .get("/manifests/video-calling.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["version"], "v202049");
    assert_eq!(manifest["clientId"], CLIENT_ID);
    let endpoint = |key: &str, meeting_id: &str| {
        manifest["endpoints"][key]
            .as_str()
            .unwrap()
            .replace(":linkId", &link.to_string())
            .replace(":meetingId", meeting_id)
            .strip_prefix(&app.address)
            .expect("endpoints are under PUBLIC_URL")
            .to_string()
    };

    let response = app
        .pipedrive(reqwest::Method::POST, &endpoint("postMeeting", ""))
        .json(&demo())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    let id = answer["data"]["meeting_id"].as_str().unwrap();

    let response = app
        .pipedrive(reqwest::Method::PATCH, &endpoint("patchUpdateMeeting", id))
        .json(&json!({"topic": "Renamed", "start_time": "2026-12-02 09:00", "duration": 30}))
        .send()
        .await
        .unwrap();
    assert_no_content(response).await;
    let response = app
        .pipedrive(reqwest::Method::DELETE, &endpoint("deleteMeeting", id))
        .send()
        .await
        .unwrap();
    assert_no_content(response).await;
    app.stop().await;
}

#[tokio::test]
async fn patch_reschedules_the_meeting_in_the_same_room() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let id = app.create_demo_meeting(link).await;
    let room = stored(&app, &id).await.room;

    let changed = json!({"topic": "Follow-up", "start_time": "2026-12-01 16:00", "duration": 90});
    assert_no_content(app.patch_meeting(link, &id, &changed).await).await;
    let expected = Stored {
        topic: "Follow-up".into(),
        start_time: at(16, 0),
        duration_minutes: 90,
        room: room.clone(),
        deleted: false,
    };
    assert_eq!(stored(&app, &id).await, expected);

    // A body with some fields only changes those.
    assert_no_content(app.patch_meeting(link, &id, &json!({"duration": 15})).await).await;
    assert_eq!(
        stored(&app, &id).await,
        Stored {
            duration_minutes: 15,
            ..expected
        }
    );
    app.stop().await;
}

#[tokio::test]
async fn delete_ends_the_meeting_and_repeating_it_is_harmless() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let id = app.create_demo_meeting(link).await;

    assert_no_content(app.delete_meeting(link, &id).await).await;
    assert!(stored(&app, &id).await.deleted);
    assert_no_content(app.delete_meeting(link, &id).await).await;

    let response = app.patch_meeting(link, &id, &demo()).await;
    assert_error(response, 404, "NOT_FOUND").await;
    app.stop().await;
}

#[tokio::test]
async fn every_route_refuses_calls_without_the_apps_basic_credentials() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let id = app.create_demo_meeting(link).await;
    let before = stored(&app, &id).await;

    let routes = [
        (reqwest::Method::POST, meetings_url(link)),
        (reqwest::Method::PATCH, meeting_url(link, &id)),
        (reqwest::Method::DELETE, meeting_url(link, &id)),
    ];
    for (method, path) in routes {
        let requests = [
            app.client.request(method.clone(), app.url(&path)),
            app.client
                .request(method.clone(), app.url(&path))
                .basic_auth(CLIENT_ID, Some("wrong-secret")),
            app.client
                .request(method.clone(), app.url(&path))
                .basic_auth("someone-else", Some(CLIENT_SECRET)),
            app.client
                .request(method.clone(), app.url(&path))
                .bearer_auth(CLIENT_SECRET),
        ];
        for request in requests {
            let response = request.json(&demo()).send().await.unwrap();
            let message = assert_error(response, 401, "UNAUTHORIZED").await;
            assert!(!message.contains(CLIENT_SECRET), "{message}");
        }
    }
    assert_eq!(stored(&app, &id).await, before, "refused calls change nothing");
    assert_eq!(app.meeting_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_refused_with_400_naming_the_field() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let id = app.create_demo_meeting(link).await;
    let before = stored(&app, &id).await;

    let with = |key: &str, value: Value| {
        let mut body = demo();
        body[key] = value;
        body
    };
    let mut no_topic = demo();
    no_topic.as_object_mut().unwrap().remove("topic");
    let cases = [
        (no_topic, "topic"),
        (with("start_time", json!("01.12.2026 14:30")), "start_time"),
        (with("start_time", json!("2026-12-01 25:00")), "start_time"),
        (with("start_time", json!(1764599400)), "start_time"),
        (with("duration", json!(0)), "duration"),
        (with("duration", json!(-30)), "duration"),
        (with("duration", json!("an hour")), "duration"),
        (with("duration", Value::Null), "duration"),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let message = assert_error(app.post_meeting(link, &body).await, 400, "BAD_REQUEST").await;
        assert!(message.starts_with(&format!("{field}: ")), "{body}: {message}");
        if field != "topic" && field != "body" && body[field] != Value::Null {
            let response = app
                .patch_meeting(link, &id, &json!({field: body[field].clone()}))
                .await;
            let message = assert_error(response, 400, "BAD_REQUEST").await;
            assert!(
                message.starts_with(&format!("{field}: ")),
                "PATCH {body}: {message}"
            );
        }
    }
    let response = app.patch_meeting(link, &id, &json!({})).await;
    assert_error(response, 400, "BAD_REQUEST").await;
    assert_eq!(stored(&app, &id).await, before, "refused updates change nothing");
    assert_eq!(app.meeting_count().await, 1, "refused creations store nothing");
    app.stop().await;
}

#[tokio::test]
async fn bodies_must_be_json_but_the_content_type_may_be_missing() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let raw = |content_type: Option<&str>, body: &str| {
        let mut request = app
            .pipedrive(reqwest::Method::POST, &meetings_url(link))
            .body(body.to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };

    let response = raw(Some("text/plain"), &demo().to_string()).await.unwrap();
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let response = raw(Some("application/json"), "{\"topic\": ").await.unwrap();
    let message = assert_error(response, 400, "BAD_REQUEST").await;
    assert!(message.starts_with("body: "), "{message}");
    let response = raw(None, &demo().to_string()).await.unwrap();
    assert_eq!(response.status(), 201);
    let response = raw(Some("application/json"), &"x".repeat(70 * 1024))
        .await
        .unwrap();
    assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_or_removed_links_and_unknown_meetings_are_404() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let removed = insert_link(&app).await;
    let id_on_removed = app.create_demo_meeting(removed).await;
    sqlx::query("UPDATE video_links SET removed_at = now() WHERE id = $1")
        .bind(removed)
        .execute(&app.db)
        .await
        .unwrap();

    for bad_link in [
        Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
        removed.to_string(),
    ] {
        assert_error(app.post_meeting(&bad_link, &demo()).await, 404, "NOT_FOUND").await;
        let response = app.patch_meeting(&bad_link, &id_on_removed, &demo()).await;
        assert_error(response, 404, "NOT_FOUND").await;
        let response = app.delete_meeting(&bad_link, &id_on_removed).await;
        assert_error(response, 404, "NOT_FOUND").await;
    }
    assert!(!stored(&app, &id_on_removed).await.deleted);

    let unknown = Uuid::now_v7().to_string();
    assert_error(app.patch_meeting(link, &unknown, &demo()).await, 404, "NOT_FOUND").await;
    assert_error(app.delete_meeting(link, &unknown).await, 404, "NOT_FOUND").await;
    app.stop().await;
}

#[tokio::test]
async fn one_links_url_cannot_change_another_links_meeting() {
    let app = spawn_app().await;
    let (owner, other) = (insert_link(&app).await, insert_link(&app).await);
    let id = app.create_demo_meeting(owner).await;
    let before = stored(&app, &id).await;

    let changed = json!({"topic": "Hijacked", "start_time": "2027-01-01 00:00", "duration": 5});
    assert_error(app.patch_meeting(other, &id, &changed).await, 404, "NOT_FOUND").await;
    assert_error(app.delete_meeting(other, &id).await, 404, "NOT_FOUND").await;
    assert_eq!(stored(&app, &id).await, before);

    // The owner still can.
    assert_no_content(app.delete_meeting(owner, &id).await).await;
    app.stop().await;
}

#[tokio::test]
async fn meetings_survive_a_restart() {
    let app = spawn_app().await;
    let link = insert_link(&app).await;
    let first = app.create_demo_meeting(link).await;
    let second = app.create_demo_meeting(link).await;
    let database_url = app.config.database_url.expose_secret().to_string();
    app.stop().await;

    let app = spawn_app_on_database(&database_url, |_| {}).await;
    let changed = json!({"topic": "After restart", "start_time": "2026-12-03 08:15", "duration": 20});
    assert_no_content(app.patch_meeting(link, &first, &changed).await).await;
    assert_eq!(stored(&app, &first).await.topic, "After restart");
    assert_no_content(app.delete_meeting(link, &second).await).await;
    assert!(stored(&app, &second).await.deleted);
    app.stop().await;
}

#[tokio::test]
async fn self_hosted_jitsi_links_carry_a_token_for_the_room_and_meeting_window() {
    let app = spawn_app_with(|env| {
        env.insert("JITSI_URL".into(), "https://video.example.net/team/".into());
        env.insert("JITSI_APP_ID".into(), "crm-meetings".into());
        env.insert("JITSI_APP_SECRET".into(), "jitsi-app-secret".into());
    })
    .await;
    let link = insert_link(&app).await;
    let data = app.create_meeting(link, &demo()).await;
    let row = stored(&app, data["meeting_id"].as_str().unwrap()).await;

    let join_url = url::Url::parse(data["join_url"].as_str().unwrap()).unwrap();
    assert_eq!(join_url.path(), format!("/team/{}", row.room));
    let token = join_url
        .query_pairs()
        .find(|(k, _)| k == "jwt")
        .map(|(_, v)| v.into_owned())
        .expect("a jwt query parameter");
    assert!(data["invitation"].as_str().unwrap().contains(join_url.as_str()));

    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&["crm-meetings"]);
    // The meeting lies in the future: its window is checked below, not against the clock.
    validation.validate_exp = false;
    let key = DecodingKey::from_secret(b"jitsi-app-secret");
    let claims = jsonwebtoken::decode::<JoinClaims>(&token, &key, &validation)
        .expect("the token verifies with the app secret")
        .claims;
    assert_eq!(claims.room, row.room);
    assert_eq!(claims.sub, "*");
    assert_eq!(claims.nbf, (at(14, 30) - TOKEN_MARGIN).timestamp());
    assert_eq!(
        claims.exp,
        (at(14, 30) + TimeDelta::minutes(45) + TOKEN_MARGIN).timestamp()
    );
    let forged = DecodingKey::from_secret(b"another-secret");
    assert!(jsonwebtoken::decode::<JoinClaims>(&token, &forged, &validation).is_err());
    app.stop().await;
}
