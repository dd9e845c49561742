//! The chat's static files, compiled into the binary: Pipedrive's app-extensions SDK (bundled
//! from npm by `ui/`, committed minified), our script and our stylesheet. Pages link them with
//! a content hash, so they can be cached for good.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::Response;

use crate::http::assets::immutable;
use crate::http::error::ApiError;

/// One file: name, content type, bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "sdk.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/ui/sdk.js"),
    },
    Asset {
        name: "chat.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/ui/chat.js"),
    },
    Asset {
        name: "chat.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/ui/chat.css"),
    },
];

/// Short content hashes, in [`ASSETS`] order.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    use sha2::Digest;
    ASSETS
        .iter()
        .map(|a| hex::encode(&sha2::Sha256::digest(a.bytes)[..6]))
        .collect()
});

/// The content hash of `name` (empty for an unknown file).
pub fn version(name: &str) -> &'static str {
    ASSETS
        .iter()
        .position(|a| a.name == name)
        .map(|i| VERSIONS[i].as_str())
        .unwrap_or("")
}

/// `GET /ui/assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == file)
        .ok_or_else(|| ApiError::NotFound(format!("No asset {file}")))?;
    Ok(immutable(asset.bytes, asset.content_type))
}
