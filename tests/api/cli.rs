//! The binary as an operator runs it: configuration errors, `check-config`, `manifest`,
//! `migrate`, and `serve` from `.env.example` values until SIGTERM.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{eventually, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_pipedrive-whatsapp");

/// The variables of `.env.example`, as an operator would start from them.
fn example_env() -> HashMap<String, String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Runs the binary in an empty directory (no stray `.env`) with exactly `env`.
fn run(args: &[&str], env: &HashMap<String, String>) -> Output {
    let dir = std::env::temp_dir();
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(dir)
        .output()
        .expect("binary runs")
}

#[test]
fn every_documented_variable_is_in_env_example() {
    let env = example_env();
    for var in [
        "DATABASE_URL",
        "PUBLIC_URL",
        "LISTEN_ADDR",
        "PIPEDRIVE_CLIENT_ID",
        "PIPEDRIVE_CLIENT_SECRET",
        "PIPEDRIVE_OAUTH_URL",
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_VERIFY_TOKEN",
        "WHATSAPP_PHONE_NUMBER_IDS",
        "WHATSAPP_BUSINESS_ACCOUNT_ID",
        "WHATSAPP_GRAPH_URL",
        "WHATSAPP_GRAPH_VERSION",
        "SECRET_KEY",
        "JITSI_URL",
        "JITSI_APP_ID",
        "JITSI_APP_SECRET",
        "PIPEDRIVE_SINK",
        "CREATE_PERSONS",
        "PIPEDRIVE_DAILY_TOKEN_BUDGET",
        "LOG_FORMAT",
        "RUST_LOG",
        "QUEUE_CONCURRENCY",
        "QUEUE_LEASE_SECONDS",
        "QUEUE_RETRY_BASE_SECONDS",
        "QUEUE_RETRY_MAX_SECONDS",
        "QUEUE_MAX_ATTEMPTS",
        "SHUTDOWN_GRACE_SECONDS",
        "OUTBOUND_TIMEOUT_SECONDS",
    ] {
        assert!(env.contains_key(var), "{var} missing from .env.example");
    }
}

#[test]
fn bad_configuration_stops_with_one_line_naming_the_variable() {
    for (var, value) in [
        ("SECRET_KEY", None),
        ("SECRET_KEY", Some("too-short")),
        ("PUBLIC_URL", Some("ftp://example.com")),
        ("WHATSAPP_PHONE_NUMBER_IDS", Some("12,x")),
        ("LISTEN_ADDR", Some("everywhere")),
    ] {
        let mut env = example_env();
        match value {
            Some(v) => env.insert(var.into(), v.into()),
            None => env.remove(var),
        };
        for command in [&["check-config"][..], &["serve"][..]] {
            let out = run(command, &env);
            assert!(!out.status.success(), "{command:?} with bad {var}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with(&format!("error: {var}:")), "{stderr}");
        }
    }
}

#[test]
fn check_config_prints_the_configuration_without_secrets() {
    let env = example_env();
    let out = run(&["check-config"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PUBLIC_URL=https://whatsapp.example.com"));
    for secret in [
        "PIPEDRIVE_CLIENT_SECRET",
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_APP_SECRET",
        "SECRET_KEY",
    ] {
        assert!(!stdout.contains(&env[secret]), "{secret} printed");
    }
    assert!(!stdout.contains("change-me"), "database password printed");
}

#[test]
fn manifest_needs_only_the_public_url_and_client_id() {
    let env: HashMap<String, String> = [
        ("PUBLIC_URL", "https://wa.example.net"),
        ("PIPEDRIVE_CLIENT_ID", "cid-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    let out = run(&["manifest", "video"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["clientId"], "cid-1");
    assert_eq!(
        manifest["endpoints"]["postMeeting"],
        "https://wa.example.net/api/video/:linkId/meetings"
    );
    let out = run(&["manifest", "messaging"], &env);
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["version"], "v202101");
}

#[tokio::test]
async fn migrate_applies_the_schema_and_exits() {
    let mut env = example_env();
    let database_url = fresh_database().await;
    env.insert("DATABASE_URL".into(), database_url.clone());
    let out = run(&["migrate"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('messages', 'jobs', 'installations')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(tables, 3);
}

#[tokio::test]
async fn serve_starts_from_env_example_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = example_env();
    env.insert("DATABASE_URL".into(), fresh_database().await);
    env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs(&env)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready = eventually(Duration::from_secs(30), || async {
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => Some(r.json::<serde_json::Value>().await.unwrap()),
            _ => None,
        }
    })
    .await;
    assert_eq!(ready["status"], "ready");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 25 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("\"stopped\""),
        "JSON logs end with the stop: {stderr}"
    );
}
