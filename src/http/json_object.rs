//! A request body that must be one JSON object, with rejections in the contract's error shape
//! that say what is wrong with the body (`body: …`), so field validation can follow.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::http::error::ApiError;

/// The body as a JSON object. A missing `Content-Type` is tolerated (callers do not all send
/// one); any type other than JSON is refused with 415.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        if let Some(value) = request.headers().get(header::CONTENT_TYPE)
            && !value.to_str().is_ok_and(is_json)
        {
            return Err(ApiError::UnsupportedMediaType(
                "body: expected Content-Type: application/json".into(),
            )
            .into_response());
        }
        // Over-long bodies are refused here with 413 by the route's body limit.
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let bad = |problem: String| ApiError::BadRequest(format!("body: {problem}")).into_response();
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Ok(Self(object)),
            Ok(_) => Err(bad("expected a JSON object".into())),
            Err(error) => Err(bad(format!("not valid JSON ({error})"))),
        }
    }
}

/// `application/json`, or a JSON-based type such as `application/merge-patch+json`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn recognises_json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }
}
