//! Pipedrive app-extension manifests, rendered for this deployment from the templates in
//! `manifests/` (the single place where the provider URL layout is written down).

use serde_json::Value;

use crate::config::PublicUrl;

const MESSAGING: &str = include_str!("../manifests/messaging.json");
const VIDEO_CALLING: &str = include_str!("../manifests/video-calling.json");

/// Which app extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Extension {
    /// The Messaging app extension (manifest version v202101).
    Messaging,
    /// The Video calling app extension (manifest version v202049).
    Video,
}

/// The manifest of `extension` with `${PUBLIC_URL}` and `${PIPEDRIVE_CLIENT_ID}` filled in.
pub fn render(extension: Extension, public_url: &PublicUrl, client_id: &str) -> Value {
    let template = match extension {
        Extension::Messaging => MESSAGING,
        Extension::Video => VIDEO_CALLING,
    };
    let mut manifest: Value = serde_json::from_str(template).expect("manifest templates are valid JSON");
    fill(&mut manifest, public_url.as_str(), client_id);
    manifest
}

fn fill(value: &mut Value, public_url: &str, client_id: &str) {
    match value {
        Value::String(s) => {
            *s = s
                .replace("${PUBLIC_URL}", public_url)
                .replace("${PIPEDRIVE_CLIENT_ID}", client_id);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill(v, public_url, client_id)),
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, public_url, client_id)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messaging_manifest_lists_the_seven_endpoints_with_their_placeholders() {
        let url = PublicUrl::parse("https://wa.example.com/").unwrap();
        let m = render(Extension::Messaging, &url, "cid");
        assert_eq!(m["version"], "v202101");
        let endpoints = m["endpoints"].as_object().unwrap();
        let required: [(&str, &[&str]); 7] = [
            ("getConversations", &[":providerChannelId"]),
            (
                "getConversationById",
                &[":providerChannelId", ":sourceConversationId"],
            ),
            ("postMessage", &[":providerChannelId"]),
            (
                "getMessageById",
                &[":providerChannelId", ":sourceConversationId", ":sourceMessageId"],
            ),
            ("getSenderById", &[":providerChannelId", ":senderId"]),
            ("getTemplates", &[":providerChannelId"]),
            ("deleteChannelById", &[":providerChannelId"]),
        ];
        assert_eq!(endpoints.len(), required.len());
        for (key, placeholders) in required {
            let url = endpoints[key].as_str().unwrap();
            assert!(url.starts_with("https://wa.example.com/api/"), "{url}");
            for p in placeholders {
                assert!(url.contains(p), "{key} lacks {p}");
            }
        }
    }

    #[test]
    fn video_manifest_carries_the_client_id_and_link_placeholders() {
        let url = PublicUrl::parse("https://wa.example.com").unwrap();
        let m = render(Extension::Video, &url, "abc\"def");
        assert_eq!(m["version"], "v202049");
        assert_eq!(m["clientId"], "abc\"def");
        for key in ["postMeeting", "patchUpdateMeeting", "deleteMeeting"] {
            assert!(m["endpoints"][key].as_str().unwrap().contains(":linkId"));
        }
        for key in ["patchUpdateMeeting", "deleteMeeting"] {
            assert!(m["endpoints"][key].as_str().unwrap().contains(":meetingId"));
        }
    }
}
