//! Provider read paths: turning stored rows into the JSON getConversationById and
//! getConversations answer, and the pagination cursors they hand out and read back. Pipedrive
//! polls these for every open inbox, so their CPU cost adds up with the number of users.

use std::hint::black_box;
use std::time::Duration;

use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

use pipedrive_whatsapp::config::{PublicUrl, SecretKey};
use pipedrive_whatsapp::crypto::Keys;
use pipedrive_whatsapp::pipedrive::cursor::{self, Cursor, Kind};
use pipedrive_whatsapp::pipedrive::provider;
use pipedrive_whatsapp::pipedrive::wire::Links;
use pipedrive_whatsapp::store::attachments::{Attachment, AttachmentStatus};
use pipedrive_whatsapp::store::channels::{Channel, ChannelMode};
use pipedrive_whatsapp::store::conversations::ConversationRow;
use pipedrive_whatsapp::store::messages::{Direction, MessageRow, MessageStatus};

/// Pipedrive's default page size, which the endpoints also default to.
const PAGE: usize = 30;

/// Seconds since the epoch of the newest message in the fixtures.
const NEWEST: i64 = 1_763_800_000;

/// Message texts of the lengths a sales chat has: mostly a line or two, some paragraphs.
const BODIES: [&str; 6] = [
    "Olá! Vocês entregam em Campinas?",
    "Sim, entregamos em toda a região de Campinas em até 5 dias úteis.",
    "Perfeito. Pode me mandar a proposta atualizada com o desconto que combinamos por telefone?",
    "Claro, segue em anexo. O desconto de 12% vale até sexta-feira; depois disso volta a tabela \
     normal. Qualquer dúvida sobre as condições de pagamento é só chamar.",
    "ok",
    "Recebi, obrigado! Vou passar para o financeiro e retorno amanhã cedo 👍",
];

/// Short runs: the whole suite should finish in about a minute on a small machine.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).expect("a valid time")
}

fn channel() -> Channel {
    Channel {
        id: Uuid::now_v7(),
        phone_number_id: "106540352242922".into(),
        display_phone_number: Some("+55 11 4003-8821".into()),
        verified_name: Some("Loja Exemplo Materiais".into()),
        installation_id: Some(Uuid::now_v7()),
        company_id: Some(13_811_429),
        pipedrive_channel_id: Some("b6f0c2a4-7d1e-4c8b-9a35-2f64e0d1c7aa".into()),
        mode: ChannelMode::Inbox,
        created_at: at(NEWEST - 90 * 86_400),
        updated_at: at(NEWEST - 90 * 86_400),
    }
}

fn conversation(channel: &Channel, n: usize) -> ConversationRow {
    ConversationRow {
        id: Uuid::now_v7(),
        channel_id: channel.id,
        status: "open".into(),
        seen: !n.is_multiple_of(3),
        last_inbound_at: Some(at(NEWEST - n as i64 * 3_600)),
        last_message_at: at(NEWEST - n as i64 * 3_600),
        contact_id: Uuid::now_v7(),
        wa_id: Some(format!("55119876{n:05}")),
        bsuid: Some(format!("BR.1349120865530274{n:04}")),
        profile_name: (!n.is_multiple_of(5)).then(|| format!("Cliente {n}")),
    }
}

/// `count` messages of a conversation, newest first as the store returns them, alternating
/// between customer and business, with the occasional failed send; plus their attachments (a
/// photo, a PDF and a voice note that could not be fetched every ten messages).
fn messages(
    channel: &Channel,
    conversation: &ConversationRow,
    count: usize,
) -> (Vec<MessageRow>, Vec<Attachment>) {
    let newest = conversation.last_message_at.timestamp();
    let mut rows = Vec::with_capacity(count);
    let mut files = Vec::new();
    for i in 0..count {
        let inbound = i % 2 == 0;
        let failed = i % 17 == 5;
        let row = MessageRow {
            id: Uuid::now_v7(),
            conversation_id: conversation.id,
            channel_id: channel.id,
            direction: if inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            sender_id: if inbound {
                conversation.contact_id.to_string()
            } else {
                channel.phone_number_id.clone()
            },
            kind: "text".into(),
            body: BODIES[i % BODIES.len()].into(),
            status: match (inbound, failed) {
                (true, _) => MessageStatus::Sent,
                (false, true) => MessageStatus::Failed,
                (false, false) => MessageStatus::Read,
            },
            error_code: failed.then_some(131_047),
            error_title: failed.then(|| "Re-engagement message".into()),
            error_detail: failed.then(|| {
                "Message failed to send because more than 24 hours have passed since the customer \
                 last replied to this number."
                    .into()
            }),
            sent_at: at(newest - i as i64 * 137),
            has_files: matches!(i % 10, 3 | 6 | 8),
        };
        let file = |position, mime: &str, filename: Option<&str>, status| Attachment {
            id: Uuid::now_v7(),
            message_id: row.id,
            position,
            media_id: Some("1037543291543636".into()),
            mime_type: mime.into(),
            filename: filename.map(str::to_string),
            size_bytes: (status == AttachmentStatus::Stored).then_some(184_320),
            sha256: None,
            status,
            error: None,
            created_at: row.sent_at,
        };
        match i % 10 {
            3 => files.push(file(0, "image/jpeg", None, AttachmentStatus::Stored)),
            6 => files.push(file(
                0,
                "application/pdf",
                Some("proposta-2025-118.pdf"),
                AttachmentStatus::Stored,
            )),
            8 => files.push(file(0, "audio/ogg", None, AttachmentStatus::Failed)),
            _ => {}
        }
        rows.push(row);
    }
    (rows, files)
}

/// getConversationById from the rows onwards: one more row than the page is fetched to learn
/// whether older messages exist.
fn conversation_page(
    links: Links<'_>,
    channel: &Channel,
    conversation: &ConversationRow,
    rows: Vec<MessageRow>,
    files: &[Attachment],
) -> axum::response::Response {
    provider::conversation_page(links, channel, conversation, rows, files, PAGE as i64).into_response()
}

/// getConversations from the rows onwards: one more conversation than the page is fetched to
/// learn whether later pages exist.
fn conversations_page(
    links: Links<'_>,
    channel: &Channel,
    mut rows: Vec<ConversationRow>,
    message_rows: Vec<MessageRow>,
    files: &[Attachment],
) -> axum::response::Response {
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    provider::conversations_page(links, channel, &rows, more, message_rows, files, PAGE as i64)
        .into_response()
}

/// Length of the JSON a response carries, for byte throughput; also checks that the fixture
/// yields a success rather than an error body.
fn body_len(response: axum::response::Response) -> u64 {
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let body = runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("an in-memory body");
    assert!(body.starts_with(br#"{"success":true,"data":"#));
    body.len() as u64
}

fn provider(c: &mut Criterion) {
    let keys = Keys::new(&SecretKey::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("a key"));
    let public_url = PublicUrl::parse("https://whatsapp.example.com").expect("a base URL");
    let links = Links {
        keys: &keys,
        public_url: &public_url,
    };
    let channel = channel();

    let one = conversation(&channel, 1);
    let (rows, files) = messages(&channel, &one, PAGE + 1);
    let one_bytes = body_len(conversation_page(links, &channel, &one, rows.clone(), &files));

    let many: Vec<ConversationRow> = (0..=PAGE).map(|n| conversation(&channel, n)).collect();
    let (mut all_rows, mut all_files) = (Vec::new(), Vec::new());
    for conversation in &many[..PAGE] {
        let (rows, files) = messages(&channel, conversation, PAGE + 1);
        all_rows.extend(rows);
        all_files.extend(files);
    }
    let many_bytes = body_len(conversations_page(
        links,
        &channel,
        many.clone(),
        all_rows.clone(),
        &all_files,
    ));

    let mut group = c.benchmark_group("provider");
    group.throughput(Throughput::ElementsAndBytes {
        elements: PAGE as u64,
        bytes: one_bytes,
    });
    // The handler owns the rows the store returned; cloning them is set-up, not measured.
    group.bench_function("conversation_page_30_messages", |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| conversation_page(links, &channel, &one, rows, black_box(&files)),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::ElementsAndBytes {
        elements: (PAGE * PAGE) as u64,
        bytes: many_bytes,
    });
    group.bench_function("conversations_page_30x30_messages", |b| {
        b.iter_batched(
            || (many.clone(), all_rows.clone()),
            |(rows, message_rows)| {
                conversations_page(links, &channel, rows, message_rows, black_box(&all_files))
            },
            BatchSize::LargeInput,
        )
    });

    let scope = one.id;
    let position = Cursor {
        at: DateTime::from_timestamp_micros(NEWEST * 1_000_000 + 123_456).expect("a valid time"),
        id: Uuid::now_v7(),
    };
    let encoded = cursor::encode(Kind::Messages, scope, position);
    assert_eq!(cursor::decode(Kind::Messages, scope, &encoded), Ok(position));
    group.throughput(Throughput::Elements(1));
    group.bench_function("cursor_encode", |b| {
        b.iter(|| cursor::encode(Kind::Messages, black_box(scope), black_box(position)))
    });
    group.bench_function("cursor_decode", |b| {
        b.iter(|| cursor::decode(Kind::Messages, black_box(scope), black_box(&encoded)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = provider
}
criterion_main!(benches);
