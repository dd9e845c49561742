//! Webhook hot paths: the signature and JSON checks the handler runs on every POST before it
//! commits the body, and the parse the ingest loop runs on every stored body. Both run once per
//! notification, so their cost bounds how many notifications a core can take in.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pipedrive_whatsapp::whatsapp::payload::{self, MessageHead, MessagesValue, Notification};
use pipedrive_whatsapp::whatsapp::signature;

const APP_SECRET: &[u8] = b"3f1c0a9be27d4c55a1e8b6f0d2c47e19";

/// A `messages` notification as Meta posts it for one inbound text: compact JSON, non-ASCII
/// and `/` escaped, the sender introduced under `contacts`. About 1 KB, the common case.
const TEXT_MESSAGE: &str = concat!(
    r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":"#,
    r#"{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","#,
    r#""phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Jo\u00e3o Concei\u00e7\u00e3o"},"#,
    r#""wa_id":"5511987654321","user_id":"BR.13491208655302741918"}],"messages":[{"context":"#,
    r#"{"from":"15550783881","id":"wamid.HBgNNTUxMTk4NzY1NDMyMRUCABEYEjQ3QjE0QzA5RkE2OTQ2RDhBMgA="},"#,
    r#""from":"5511987654321","from_user_id":"BR.13491208655302741918","#,
    r#""id":"wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFDNBMEM3NTk4QjI0NjFFMDU3QjFGAA==","#,
    r#""timestamp":"1763800000","text":{"body":"Ol\u00e1! Recebi a proposta de ontem, obrigado. "#,
    r#"Antes de fechar preciso confirmar tr\u00eas pontos: 1) o prazo de entrega para S\u00e3o Paulo "#,
    r#"continua 10 dias \u00fateis? 2) o pre\u00e7o inclui a instala\u00e7\u00e3o e o treinamento da "#,
    r#"equipe? 3) \u00e9 poss\u00edvel parcelar em 3x no boleto? O link do contrato "#,
    r#"https:\/\/example.com\/contrato\/2025-118 n\u00e3o abre no celular, podem mandar em PDF? "#,
    r#"Se estiver tudo certo assinamos ainda esta semana \ud83d\ude4f"},"type":"text"}]},"#,
    r#""field":"messages"}]}]}"#
);

/// Short runs: these are nanosecond-to-microsecond paths, and the whole suite should finish in
/// about a minute.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The steps `whatsapp::inbound::process` takes before it touches the database: the typed
/// notification, the `messages` value (cloned and NUL-stripped, as stored rows must hold no
/// NUL), and the head of every message item.
fn parse_for_ingest(body: &[u8]) -> usize {
    let notification: Notification = serde_json::from_slice(body).expect("a notification");
    let mut heads = 0;
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        let mut value = change.value.clone();
        payload::strip_nul(&mut value);
        let value: MessagesValue = serde_json::from_value(value).expect("a messages value");
        for item in value.messages.iter().chain(&value.message_echoes) {
            let head: MessageHead = serde_json::from_value(item.clone()).expect("a message head");
            black_box(&head);
            heads += 1;
        }
        black_box(&value.contacts);
    }
    heads
}

fn webhook(c: &mut Criterion) {
    let body = TEXT_MESSAGE.as_bytes();
    let header = signature::sign(APP_SECRET, body);
    // A fixture that stopped verifying or parsing would measure an early error return.
    signature::verify(APP_SECRET, Some(header.as_bytes()), body).expect("signed body verifies");
    assert_eq!(parse_for_ingest(body), 1);

    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify_signature", |b| {
        b.iter(|| {
            signature::verify(
                black_box(APP_SECRET),
                Some(black_box(header.as_bytes())),
                black_box(body),
            )
        })
    });
    group.bench_function("verify_signature_and_json", |b| {
        b.iter(|| {
            signature::verify(APP_SECRET, Some(header.as_bytes()), black_box(body))
                .expect("signed body verifies");
            serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).expect("valid JSON")
        })
    });
    group.bench_function("parse_for_ingest", |b| {
        b.iter(|| parse_for_ingest(black_box(body)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = webhook
}
criterion_main!(benches);
