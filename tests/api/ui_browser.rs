//! The chat panel in a real browser: Debian's headless Chromium, driven by `ui/browser-test.mjs`
//! (playwright-core from `ui/`'s npm dependencies) against the running app and fake Graph API.
//! Skipped, saying why, on a machine without Chromium, Node or those dependencies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use tokio::process::Child;

use crate::helpers::{CLIENT_SECRET, PHONE_NUMBER_IDS, TestApp, eventually, inbound_webhook, text_message};
use crate::pipedrive_fake::{COMPANY_ID, USER_ID};
use crate::ui::{
    CUSTOMER, accept_sends, chat_app, close_window, offer_templates, order_followup, panel_path,
    sent_to_whatsapp, token, ui_token,
};

/// Chromium's executable: `$CHROMIUM`, else Debian's.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file())
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    if chromium().is_none() {
        return Some("Chromium is not installed (apt-get install -y chromium)".into());
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("Node.js is not installed".into());
    }
    if !ui_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return Some("ui/'s npm dependencies are not installed (cd ui && npm ci)".into());
    }
    None
}

/// Starts the browser script on `page` (a path with its token) with `vars`.
fn start_browser(app: &TestApp, scenario: &str, page: &str, vars: &[(&str, &str)]) -> Child {
    let mut command = tokio::process::Command::new("node");
    command
        .arg("browser-test.mjs")
        .current_dir(ui_dir())
        .env("SCENARIO", scenario)
        .env("CHROMIUM", chromium().expect("checked before"))
        .env("PANEL_URL", app.url(page))
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("UI_SCREENSHOT") {
        command.env("SCREENSHOT", path);
    }
    command.spawn().expect("node starts")
}

/// Waits for the browser script and fails with its report unless it passed.
async fn browser_passed(browser: Child) {
    let output = tokio::time::timeout(Duration::from_secs(120), browser.wait_with_output())
        .await
        .expect("the browser test ends within 2 minutes")
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn in_chromium_the_panel_shows_the_thread_sends_a_reply_and_refuses_a_forged_token() {
    if let Some(why) = missing() {
        eprintln!("SKIPPED browser test of the chat panel: {why}");
        return;
    }
    let (app, _) = chat_app().await;
    accept_sends(&app, "wamid.BROWSER").await;
    let reply = "Sim, temos o modelo azul 👍";
    let answer = "Perfeito, obrigado!";
    let forged = app.url(&panel_path(&ui_token(
        "forged-secret",
        Algorithm::HS256,
        COMPANY_ID,
        USER_ID,
        300,
    )));
    let browser = start_browser(
        &app,
        "reply",
        &panel_path(&token()),
        &[
            ("EXPECT_TEXT", "blue"),
            ("REPLY_TEXT", reply),
            ("ANSWER_TEXT", answer),
            ("FORGED_URL", &forged),
        ],
    );
    // Once the reply reached WhatsApp, the customer answers; the open page must show it. (If
    // it never does, the browser's own report below says why.)
    let reached = tokio::time::timeout(
        Duration::from_secs(60),
        eventually(Duration::from_secs(90), || async {
            (!sent_to_whatsapp(&app).await.is_empty()).then_some(())
        }),
    )
    .await;
    if reached.is_ok() {
        // Late enough that the page's own refresh after sending has come and gone: only
        // polling can bring the answer in.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = chrono::Utc::now().timestamp() + 1;
        app.post_webhook(&inbound_webhook(
            PHONE_NUMBER_IDS[0],
            CUSTOMER,
            "Ana",
            vec![text_message("wamid.ANSWER", CUSTOMER, later, answer)],
        ))
        .await;
    }
    browser_passed(browser).await;
    let sent = sent_to_whatsapp(&app).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], CUSTOMER);
    assert_eq!(sent[0]["text"]["body"], reply);
    app.stop().await;
}

#[tokio::test]
async fn in_chromium_a_closed_window_sends_a_template_with_its_parameters() {
    if let Some(why) = missing() {
        eprintln!("SKIPPED browser test of the chat's template picker: {why}");
        return;
    }
    let (app, _) = chat_app().await;
    close_window(&app).await;
    offer_templates(&app).await;
    accept_sends(&app, "wamid.BROWSER_TEMPLATE").await;
    let browser = start_browser(
        &app,
        "template",
        &panel_path(&token()),
        &[
            ("EXPECT_TEXT", "blue"),
            ("TEMPLATE_NAME", "order_followup"),
            ("PARAMS", r##"["Ana Souza", "#42"]"##),
            ("REPLY_TEXT", "Hello Ana Souza, your order #42 has shipped."),
        ],
    );
    browser_passed(browser).await;
    let sent = sent_to_whatsapp(&app).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["template"], order_followup(["Ana Souza", "#42"]));
    app.stop().await;
}

#[tokio::test]
async fn in_chromium_the_floating_window_opens_a_thread_answers_it_and_marks_it_seen() {
    if let Some(why) = missing() {
        eprintln!("SKIPPED browser test of the chat's floating window: {why}");
        return;
    }
    let (app, conversation) = chat_app().await;
    accept_sends(&app, "wamid.BROWSER_FLOATING").await;
    let reply = "Vou verificar e já respondo.";
    let page = format!(
        "/ui/floating?userId={USER_ID}&companyId={COMPANY_ID}&id=floating-1&token={}",
        token()
    );
    let browser = start_browser(
        &app,
        "floating",
        &page,
        &[("EXPECT_TEXT", "blue"), ("REPLY_TEXT", reply)],
    );
    browser_passed(browser).await;
    assert_eq!(sent_to_whatsapp(&app).await[0]["text"]["body"], reply);
    let seen: bool = sqlx::query_scalar("SELECT seen FROM conversations WHERE id = $1")
        .bind(conversation)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(seen, "opening the thread marked it seen");
    app.stop().await;
}

#[tokio::test]
async fn in_chromium_framed_by_pipedrive_the_sdk_is_initialised_and_its_tokens_used() {
    if let Some(why) = missing() {
        eprintln!("SKIPPED browser test of the chat's Pipedrive SDK use: {why}");
        return;
    }
    let (app, _) = chat_app().await;
    // The iframe is loaded for another company (which has no conversations); only the fresh
    // tokens the SDK hands out name the company with the customer's thread, so the page can
    // only show it and count it by using them.
    let elsewhere = COMPANY_ID + 1;
    let page = format!(
        "/ui/floating?userId={USER_ID}&companyId={elsewhere}&id=floating-1&token={}",
        ui_token(CLIENT_SECRET, Algorithm::HS256, elsewhere, USER_ID, 300)
    );
    let fresh = token();
    let browser = start_browser(
        &app,
        "framed",
        &page,
        &[("EXPECT_TEXT", "blue"), ("FRESH_TOKEN", &fresh)],
    );
    browser_passed(browser).await;
    let seen: bool = sqlx::query_scalar("SELECT seen FROM conversations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(seen, "opened in the frame, the thread was marked seen");
    app.stop().await;
}
