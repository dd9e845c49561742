//! Pipedrive: the OAuth install (consent, tokens sealed at rest, channel and video-link
//! registration), the authorized API client every feature calls Pipedrive with, the callbacks
//! Pipedrive sends us (uninstall, sharing state), the provider endpoints of the messaging
//! extension, and delivery of messages into Pipedrive.

pub mod channels;
pub mod client;
pub mod cursor;
pub mod delivery;
pub mod install;
pub mod oauth;
mod page;
pub mod provider;
mod response;
mod routes;
pub mod sink;
pub mod wire;

pub use client::PipedriveClient;
pub use response::{PipedriveError, PipedriveResponse, RateLimit, park_tag};
pub use routes::router;

/// Validates the `api_domain` of a token response: an absolute https URL (http only for a
/// loopback host), returned without a trailing slash. Every token is sent there.
pub fn api_domain(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value.trim()).map_err(|e| format!("api_domain is not a URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        other => return Err(format!("api_domain uses {other}://, not https://")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("api_domain carries more than a base URL".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::api_domain;

    #[test]
    fn api_domains_must_be_https_base_urls() {
        assert_eq!(
            api_domain("https://acme.pipedrive.com/").unwrap(),
            "https://acme.pipedrive.com"
        );
        assert_eq!(
            api_domain("http://127.0.0.1:4000").unwrap(),
            "http://127.0.0.1:4000"
        );
        for bad in [
            "http://acme.pipedrive.com",
            "ftp://acme.pipedrive.com",
            "acme.pipedrive.com",
            "https://acme.pipedrive.com/?x=1",
            "https://user@acme.pipedrive.com",
        ] {
            assert!(api_domain(bad).is_err(), "{bad}");
        }
    }
}
