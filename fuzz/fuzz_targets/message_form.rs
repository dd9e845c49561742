//! The postMessage multipart form: the first line of the input is the Content-Type header, the
//! rest the body.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Request;
use libfuzzer_sys::fuzz_target;
use pipedrive_whatsapp::pipedrive::provider::message_form;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"multipart/form-data; boundary=b"[..], data),
    };
    let mut request = Request::builder();
    if let Ok(value) = axum::http::HeaderValue::from_bytes(content_type) {
        request = request.header(axum::http::header::CONTENT_TYPE, value);
    }
    let request = request.body(Body::from(body.to_vec())).expect("a request");
    let _ = runtime().block_on(message_form::read(request));
});
