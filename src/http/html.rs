//! Server-rendered HTML pages for browser flows (install results and errors) and for the chat
//! Pipedrive shows in its iframes: page shells, escaping, and the security headers every page
//! carries.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// Nothing runs on our pages: no scripts, no frames, images only from us.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'";

/// Pages shown inside Pipedrive: our own scripts, styles, media and API only, framed by
/// Pipedrive (and by ourselves, which is what a test harness does).
const EMBEDDED_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; media-src 'self'; connect-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'self' https://*.pipedrive.com";

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:44rem;\
margin:3rem auto;padding:0 1rem;color:#1f2933;line-height:1.5}h1{font-size:1.5rem}\
h2{font-size:1.1rem;margin-top:2rem}li{margin:.4rem 0}.ok{color:#1b7f3b}.warn{color:#a15c00}\
.err{color:#b42318}code{background:#f2f4f7;padding:0 .25rem;border-radius:3px}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete page: `title` is text (escaped here), `body` is HTML the caller built with
/// [`escape`]d values.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let title = escape(title);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · pipedrive-whatsapp</title><style>{STYLE}</style></head>\
<body><h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    let mut response = (status, Html(html)).into_response();
    secure(&mut response);
    response
}

/// A page Pipedrive shows in an iframe: `title` is text (escaped here); `head` (stylesheets and
/// scripts, same origin only) and `body` are HTML the caller built with [`escape`]d values.
pub fn embedded_page(status: StatusCode, title: &str, head: &str, body: &str) -> Response {
    let title = escape(title);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · pipedrive-whatsapp</title>{head}</head>\n<body>{body}</body></html>\n"
    );
    let mut response = (status, Html(html)).into_response();
    private_headers(&mut response, EMBEDDED_CONTENT_SECURITY_POLICY);
    response
}

/// Adds the headers that keep a page from being framed, sniffed or leaking its URL.
pub fn secure(response: &mut Response) {
    private_headers(response, CONTENT_SECURITY_POLICY);
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// What every page carries: its content policy, no sniffing, no caching, and no referrer (page
/// URLs carry states and tokens).
fn private_headers(response: &mut Response, content_security_policy: &'static str) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(content_security_policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pages_carry_security_headers_and_an_escaped_title() {
        let response = page(StatusCode::BAD_REQUEST, "<Oops>", "<p>body</p>");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    #[test]
    fn embedded_pages_may_be_framed_by_pipedrive_only() {
        let response = embedded_page(
            StatusCode::OK,
            "Chat",
            "<link rel=\"stylesheet\" href=\"a.css\">",
            "",
        );
        let headers = response.headers();
        assert!(headers.get(header::X_FRAME_OPTIONS).is_none());
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.ends_with("frame-ancestors 'self' https://*.pipedrive.com"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
}
