//! Hostile and broken requests on every route: oversize bodies, wrong content types, SQL and
//! path tricks in every parameter, invalid UTF-8 and huge numbers get a clear 4xx (the JSON
//! envelope, or an HTML page on browser routes), never a 500 or a panic. Pages carry security
//! headers, and no response allows cross-origin reads.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::{
    APP_SECRET, CLIENT_ID, CLIENT_SECRET, PHONE_NUMBER_IDS, TestApp, eventually, inbound_webhook,
    message_count, spawn_app, text_message,
};

const CUSTOMER: &str = "5511987654321";

/// Every route, with `{…}` for its path parameters.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/manifests/messaging.json"),
    ("GET", "/manifests/video-calling.json"),
    ("GET", "/static/whatsapp-channel.png"),
    ("GET", "/auth/pipedrive"),
    ("GET", "/auth/pipedrive/callback"),
    ("POST", "/auth/pipedrive/callback"),
    ("DELETE", "/auth/pipedrive/callback"),
    ("GET", "/webhooks/whatsapp"),
    ("POST", "/webhooks/whatsapp"),
    ("GET", "/media/{media}"),
    ("GET", "/avatars/{avatar}"),
    ("DELETE", "/api/channels/{channel}"),
    ("GET", "/api/channels/{channel}/conversations"),
    ("GET", "/api/channels/{channel}/conversations/{conversation}"),
    (
        "GET",
        "/api/channels/{channel}/conversations/{conversation}/messages/{message}",
    ),
    ("GET", "/api/channels/{channel}/messages/{message}"),
    ("GET", "/api/channels/{channel}/senders/{sender}"),
    ("GET", "/api/channels/{channel}/templates"),
    ("POST", "/api/channels/{channel}/messages"),
    ("POST", "/api/video/{link}/meetings"),
    ("PATCH", "/api/video/{link}/meetings/{meeting}"),
    ("DELETE", "/api/video/{link}/meetings/{meeting}"),
];

/// Path segments (already percent-encoded) that try SQL, traversal, encodings and sizes.
fn tricks() -> Vec<String> {
    [
        "%27%20OR%20%271%27%3D%271",
        "1%3BDROP%20TABLE%20messages%3B--",
        "%27%3B%20DELETE%20FROM%20jobs%3B%20--",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2f",
        "%00",
        "%FF%FE",
        "%C0%AE%C0%AE",
        "%E2%80%AE%F0%9F%92%A5",
        "%7B%7B7*7%7D%7D",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "99999999999999999999999999999999",
        "-1",
        "00000000-0000-0000-0000-000000000000",
    ]
    .into_iter()
    .map(str::to_string)
    .chain([format!("{}.svg", "x".repeat(5000))])
    .collect()
}

/// Query values: the path tricks plus numbers no field can hold.
fn query_tricks() -> Vec<String> {
    let mut values = tricks();
    values.extend(
        [
            "1e309",
            "NaN",
            "-9223372036854775809",
            "9223372036854775808",
            "0x10",
            "",
        ]
        .map(str::to_string),
    );
    values
}

/// The query parameters each route reads.
fn query_names(path: &str) -> &'static [&'static str] {
    match path {
        "/api/channels/{channel}/conversations" => &["conversations_limit", "messages_limit", "after"],
        "/api/channels/{channel}/conversations/{conversation}" => &["messages_limit", "after"],
        "/media/{media}" => &["exp", "sig"],
        "/auth/pipedrive/callback" => &["code", "state", "error"],
        "/webhooks/whatsapp" => &["hub.mode", "hub.verify_token", "hub.challenge"],
        _ => &[],
    }
}

/// Routes a browser opens: their errors are HTML pages.
fn is_page(method: &str, path: &str) -> bool {
    method == "GET" && path.starts_with("/auth/pipedrive")
}

/// Ids that exist, so that a trick in one parameter is not hidden behind a 404 of another.
struct Known {
    channel: String,
    conversation: Uuid,
    message: Uuid,
    contact: Uuid,
    link: Uuid,
    meeting: String,
}

impl Known {
    fn value(&self, name: &str) -> String {
        match name {
            "channel" => self.channel.clone(),
            "conversation" => self.conversation.to_string(),
            "message" | "media" => self.message.to_string(),
            "sender" => self.contact.to_string(),
            "avatar" => format!("{}.svg", self.contact),
            "link" => self.link.to_string(),
            "meeting" => self.meeting.clone(),
            other => panic!("unknown parameter {other}"),
        }
    }
}

/// An app with a conversation, a message, a video link and a meeting.
async fn populated() -> (TestApp, Known) {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    app.post_webhook(&inbound_webhook(
        PHONE_NUMBER_IDS[0],
        CUSTOMER,
        "Ana",
        vec![text_message("wamid.BAD1", CUSTOMER, now, "hello")],
    ))
    .await;
    let (conversation, contact, message): (Uuid, Uuid, Uuid) = eventually(Duration::from_secs(10), || async {
        sqlx::query_as("SELECT v.id, v.contact_id, m.id FROM conversations v JOIN messages m ON m.conversation_id = v.id")
            .fetch_optional(&app.db)
            .await
            .unwrap()
    })
    .await;
    let link = Uuid::new_v4();
    sqlx::query("INSERT INTO video_links (id, company_id, user_id) VALUES ($1, 1, 1)")
        .bind(link)
        .execute(&app.db)
        .await
        .unwrap();
    let created: Value = app
        .provider(Method::POST, &format!("/api/video/{link}/meetings"))
        .json(&json!({"topic": "Demo", "start_time": "2030-01-01 10:00:00", "duration": 30}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let meeting = created["data"]["meeting_id"]
        .as_str()
        .expect("a meeting")
        .to_string();
    let known = Known {
        channel: PHONE_NUMBER_IDS[0].to_string(),
        conversation,
        message,
        contact,
        link,
        meeting,
    };
    (app, known)
}

/// `path` with each `{name}` replaced by `value(name)`.
fn fill(path: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest.find('}').expect("closed");
        out.push_str(&rest[..start]);
        out.push_str(&value(&rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn params(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .map(|p| p.split('}').next().unwrap().to_string())
        .collect()
}

/// Sends `method url` as Pipedrive would (Basic credentials), with an optional body.
async fn send(app: &TestApp, method: &str, url: &str, body: Option<(&str, Vec<u8>)>) -> Response {
    let mut request = app
        .client
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{url}", app.address),
        )
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    request.send().await.expect("the app answers")
}

/// A clear refusal: 4xx, the JSON envelope (or an HTML page on browser routes).
async fn assert_refused(response: Response, what: &str, page: bool) -> u16 {
    let status = response.status().as_u16();
    assert!((400..500).contains(&status), "{what}: {status}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.text().await.unwrap();
    if page {
        assert!(content_type.starts_with("text/html"), "{what}: {content_type}");
    } else {
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type} {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
        assert_eq!(body["success"], false, "{what}: {body}");
        assert!(
            body["data"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    status
}

/// No 5xx, whatever came back.
fn assert_no_server_error(response: &Response, what: &str) {
    assert!(response.status().as_u16() < 500, "{what}: {}", response.status());
}

#[tokio::test]
async fn tricks_in_every_path_parameter_get_a_clear_4xx() {
    let (app, known) = populated().await;
    let messages_before = message_count(&app.db).await;
    let mut checked = 0;
    for (method, path) in ROUTES {
        for param in params(path) {
            for trick in tricks() {
                let url = fill(path, |name| {
                    if name == param {
                        trick.clone()
                    } else {
                        known.value(name)
                    }
                });
                let body = match *method {
                    "POST" | "PATCH" if path.starts_with("/api/video") => Some((
                        "application/json",
                        br#"{"topic":"x","start_time":"2030-01-01 10:00:00","duration":5}"#.to_vec(),
                    )),
                    _ => None,
                };
                let response = send(&app, method, &url, body).await;
                assert_refused(response, &format!("{method} {url}"), false).await;
                checked += 1;
            }
        }
    }
    let messages_after = message_count(&app.db).await;
    assert_eq!(messages_before, messages_after, "nothing was deleted or added");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(jobs > 0, "the jobs table is intact");
    assert!(checked > 200, "{checked} requests");
    app.stop().await;
}

#[tokio::test]
async fn tricks_and_huge_numbers_in_every_query_parameter_never_fail_the_server() {
    let (app, known) = populated().await;
    for (method, path) in ROUTES.iter().filter(|(m, _)| *m == "GET") {
        for name in query_names(path) {
            for value in query_tricks() {
                let url = format!("{}?{name}={value}", fill(path, |p| known.value(p)));
                let response = send(&app, method, &url, None).await;
                assert_no_server_error(&response, &format!("{method} {url}"));
                if !response.status().is_success() && response.status().as_u16() != 303 {
                    assert_refused(response, &format!("{method} {url}"), is_page(method, path)).await;
                }
            }
        }
    }
    // Limits no page size can meet are refused by name.
    let conversations = format!("/api/channels/{}/conversations", known.channel);
    for huge in ["99999999999999999999", "-5", "1e3", "0"] {
        let response = send(
            &app,
            "GET",
            &format!("{conversations}?conversations_limit={huge}"),
            None,
        )
        .await;
        assert_eq!(response.status(), 400, "{huge}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["data"]["message"]
                .as_str()
                .unwrap()
                .contains("conversations_limit"),
            "{body}"
        );
    }
    // The same parameter twice is a refusal, on a page for the browser route.
    let twice = send(
        &app,
        "GET",
        "/auth/pipedrive/callback?code=a&code=b&state=x",
        None,
    )
    .await;
    assert_refused(twice, "duplicate code", true).await;
    app.stop().await;
}

/// Sends headers announcing `length` bytes and only a few of them; the status, if any came.
async fn announce_body(
    app: &TestApp,
    method: &str,
    path: &str,
    content_type: &str,
    length: u64,
) -> Option<u16> {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
    );
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nAuthorization: Basic {basic}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&[b'x'; 1024]).await;
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .ok()?
        .ok()?;
    let line = String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()?
        .to_string();
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let (app, known) = populated().await;
    let webhook = vec![b' '; 5 * 1024 * 1024];
    let response = send(
        &app,
        "POST",
        "/webhooks/whatsapp",
        Some(("application/json", webhook)),
    )
    .await;
    assert_eq!(assert_refused(response, "5 MiB webhook", false).await, 413);
    let big_json = format!(
        r#"{{"topic":"{}","start_time":"2030-01-01 10:00:00","duration":5}}"#,
        "x".repeat(100 * 1024)
    );
    for (method, path) in [
        ("POST", format!("/api/video/{}/meetings", known.link)),
        (
            "PATCH",
            format!("/api/video/{}/meetings/{}", known.link, known.meeting),
        ),
        ("POST", "/auth/pipedrive/callback".to_string()),
        ("DELETE", "/auth/pipedrive/callback".to_string()),
    ] {
        let response = send(
            &app,
            method,
            &path,
            Some(("application/json", big_json.clone().into_bytes())),
        )
        .await;
        assert_eq!(
            assert_refused(response, &format!("{method} {path}"), false).await,
            413
        );
    }
    // A declared length past the limit is refused before the body is read.
    let post_message = format!("/api/channels/{}/messages", known.channel);
    let status = announce_body(
        &app,
        "POST",
        &post_message,
        "multipart/form-data; boundary=b",
        300 * 1024 * 1024,
    )
    .await;
    assert_eq!(status, Some(413), "postMessage announcing 300 MB");
    let status = announce_body(
        &app,
        "POST",
        "/webhooks/whatsapp",
        "application/json",
        50 * 1024 * 1024,
    )
    .await;
    assert_eq!(status, Some(413), "webhook announcing 50 MB");
    app.stop().await;
}

#[tokio::test]
async fn wrong_content_types_invalid_utf8_and_huge_numbers_in_bodies_are_4xx() {
    let (app, known) = populated().await;
    let meetings = format!("/api/video/{}/meetings", known.link);
    let meeting = format!("{meetings}/{}", known.meeting);
    let post_message = format!("/api/channels/{}/messages", known.channel);
    let valid = br#"{"topic":"x","start_time":"2030-01-01 10:00:00","duration":5}"#.to_vec();
    let cases: Vec<(&str, &str, &str, Vec<u8>, u16)> = vec![
        ("POST", &meetings, "text/plain", valid.clone(), 415),
        (
            "POST",
            &meetings,
            "application/x-www-form-urlencoded",
            b"topic=x".to_vec(),
            415,
        ),
        ("PATCH", &meeting, "application/xml", b"<topic/>".to_vec(), 415),
        ("POST", &post_message, "application/json", b"{}".to_vec(), 415),
        ("POST", &post_message, "text/plain", b"hello".to_vec(), 415),
        (
            "POST",
            &post_message,
            "multipart/form-data",
            b"no boundary".to_vec(),
            400,
        ),
        (
            "POST",
            "/auth/pipedrive/callback",
            "application/x-www-form-urlencoded",
            b"company_id=1".to_vec(),
            400,
        ),
        (
            "DELETE",
            "/auth/pipedrive/callback",
            "text/plain",
            b"company_id=1".to_vec(),
            400,
        ),
        // Invalid UTF-8.
        (
            "POST",
            &meetings,
            "application/json",
            b"{\"topic\":\"\xff\xfe\",\"duration\":5}".to_vec(),
            400,
        ),
        (
            "PATCH",
            &meeting,
            "application/json",
            b"{\"topic\":\"\xc0\xae\"}".to_vec(),
            400,
        ),
        (
            "DELETE",
            "/auth/pipedrive/callback",
            "application/json",
            b"{\"company_id\":\"\xff\"}".to_vec(),
            400,
        ),
        (
            "POST",
            &post_message,
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n\xff\xfe\r\n--b--\r\n".to_vec(),
            400,
        ),
        // Numbers no field can hold.
        (
            "POST",
            &meetings,
            "application/json",
            br#"{"topic":"x","start_time":"2030-01-01 10:00:00","duration":1e400}"#.to_vec(),
            400,
        ),
        (
            "POST",
            &meetings,
            "application/json",
            br#"{"topic":"x","start_time":"2030-01-01 10:00:00","duration":99999999999999999999999}"#
                .to_vec(),
            400,
        ),
        (
            "POST",
            &meetings,
            "application/json",
            br#"{"topic":"x","start_time":"99999-01-01 10:00:00","duration":5}"#.to_vec(),
            400,
        ),
        (
            "PATCH",
            &meeting,
            "application/json",
            br#"{"duration":-9223372036854775809}"#.to_vec(),
            400,
        ),
        (
            "DELETE",
            "/auth/pipedrive/callback",
            "application/json",
            br#"{"company_id":1e300}"#.to_vec(),
            400,
        ),
        (
            "DELETE",
            "/auth/pipedrive/callback",
            "application/json",
            br#"{"company_id":"99999999999999999999"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/auth/pipedrive/callback",
            "application/json",
            br#"{"company_id":18446744073709551616,"isShared":true}"#.to_vec(),
            400,
        ),
        // Not JSON objects at all.
        ("POST", &meetings, "application/json", b"[1,2,3]".to_vec(), 400),
        ("PATCH", &meeting, "application/json", b"null".to_vec(), 400),
    ];
    for (method, path, content_type, body, expected) in cases {
        let response = send(&app, method, path, Some((content_type, body))).await;
        let status = assert_refused(response, &format!("{method} {path} ({content_type})"), false).await;
        assert_eq!(status, expected, "{method} {path} ({content_type})");
    }
    app.stop().await;
}

/// Posts `body` signed with the app secret.
async fn post_signed(app: &TestApp, body: &[u8], content_type: &str) -> Response {
    let signature = pipedrive_whatsapp::whatsapp::signature::sign(APP_SECRET.as_bytes(), body);
    app.client
        .post(app.url("/webhooks/whatsapp"))
        .header("content-type", content_type)
        .header("x-hub-signature-256", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn hostile_webhooks_are_refused_or_stored_harmlessly() {
    let (app, known) = populated().await;
    // Signed but not JSON, or not UTF-8: 400; unsigned: 401.
    assert_eq!(
        post_signed(&app, b"\xff\xfe{}", "application/json")
            .await
            .status(),
        400
    );
    assert_eq!(
        post_signed(&app, b"<xml/>", "application/xml").await.status(),
        400
    );
    let unsigned = app
        .client
        .post(app.url("/webhooks/whatsapp"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_refused(unsigned, "unsigned webhook", false).await;
    // Signed JSON with times and numbers at the edge of every range, and NUL characters
    // (which PostgreSQL cannot hold), is stored, processed and still readable through the
    // provider endpoints.
    let edges = [
        "99999999999999999999",
        "8210298412799",
        "-8334601228800",
        "1e30",
        "NaN",
        "-1",
    ];
    for (i, timestamp) in edges.iter().enumerate() {
        let item = json!({"from": CUSTOMER, "id": format!("wamid.EDGE{i}"), "timestamp": timestamp, "type": "location",
            "location": {"latitude": 1e308, "longitude": -1e308, "name": "\u{202e}edge\u{0}"}});
        let hook = inbound_webhook(PHONE_NUMBER_IDS[0], CUSTOMER, "Ana", vec![item]);
        assert_eq!(app.post_webhook(&hook).await.status(), 200, "{timestamp}");
    }
    eventually(Duration::from_secs(10), || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE state = 'pending'")
            .fetch_one(&app.db)
            .await
            .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE state = 'failed'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(failed, 0, "every edge value was stored");
    let listing = send(
        &app,
        "GET",
        &format!("/api/channels/{}/conversations?messages_limit=100", known.channel),
        None,
    )
    .await;
    assert_eq!(listing.status(), 200);
    let page: Value = listing.json().await.unwrap();
    let messages = page["data"][0]["messages"].as_array().unwrap().len();
    assert_eq!(messages, 1 + edges.len());
    app.stop().await;
}

#[tokio::test]
async fn pages_carry_security_headers_and_nothing_allows_cross_origin_reads() {
    let (app, known) = populated().await;
    for url in [
        "/auth/pipedrive/callback",
        "/auth/pipedrive/callback?error=access_denied",
        "/auth/pipedrive",
    ] {
        let response = app.get(url).await;
        let headers = response.headers();
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'"),
            "{url}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(headers["x-frame-options"], "DENY", "{url}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{url}");
    }
    for (method, path) in ROUTES {
        let url = fill(path, |name| known.value(name));
        let preflight = app
            .client
            .request(Method::OPTIONS, app.url(&url))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", *method)
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert_no_server_error(&preflight, &format!("OPTIONS {url}"));
        assert!(
            preflight.headers().get("access-control-allow-origin").is_none(),
            "OPTIONS {url}"
        );
        if *method == "GET" {
            let read = app
                .client
                .get(app.url(&url))
                .header("origin", "https://evil.example")
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .send()
                .await
                .unwrap();
            assert!(
                read.headers().get("access-control-allow-origin").is_none(),
                "GET {url}"
            );
            assert!(
                read.headers().get("access-control-allow-credentials").is_none(),
                "GET {url}"
            );
            assert_eq!(read.headers()["x-content-type-options"], "nosniff", "GET {url}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_credentials_and_signatures_are_401() {
    let (app, known) = populated().await;
    let conversations = app.url(&format!("/api/channels/{}/conversations", known.channel));
    let long = format!("Basic {}", "A".repeat(60_000));
    let headers: Vec<reqwest::header::HeaderValue> = vec![
        reqwest::header::HeaderValue::from_static("Basic"),
        reqwest::header::HeaderValue::from_static("Basic !!!not-base64!!!"),
        reqwest::header::HeaderValue::from_static("Basic dGVzdC1jbGllbnQtaWQ="),
        reqwest::header::HeaderValue::from_static("Bearer test-client-secret"),
        reqwest::header::HeaderValue::from_bytes(b"Basic \xff\xfe\xfd").unwrap(),
        reqwest::header::HeaderValue::from_str(&long).unwrap(),
    ];
    for value in headers {
        let response = app
            .client
            .get(&conversations)
            .header("authorization", value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(assert_refused(response, &format!("{value:?}"), false).await, 401);
    }
    for signature in [&b"sha256=\xff\xfe"[..], b"sha256=", b"md5=00", &[b'a'; 5000][..]] {
        let response = app
            .client
            .post(app.url("/webhooks/whatsapp"))
            .header(
                "x-hub-signature-256",
                reqwest::header::HeaderValue::from_bytes(signature).unwrap(),
            )
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(assert_refused(response, "bad signature", false).await, 401);
    }
    app.stop().await;
}
