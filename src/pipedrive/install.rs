//! The install, after consent: exchange the code, identify the user, store the installation
//! with sealed tokens (healing one that needed re-authorization), register the channels and
//! the video-calling link. Also the uninstall notice.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use super::channels::{self, NumberReport, Owner};
use super::oauth::OAuthError;
use super::park_tag;
use crate::queue;
use crate::state::AppState;
use crate::store::installations::{self, InstallationStatus, NewInstallation};
use crate::store::{channels as channel_rows, video_links};

/// The scope that lets us register a video-calling link.
const VIDEO_SCOPE: &str = "video-calls";

/// Why an install could not complete.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The code exchange failed.
    #[error("Pipedrive did not accept the authorization: {0}")]
    Exchange(#[from] OAuthError),
    /// Pipedrive's token response lacks something we need.
    #[error("Pipedrive's token response is incomplete: {0}")]
    Incomplete(String),
    /// `/users/me` failed or did not name the user and company.
    #[error("Pipedrive did not tell who you are: {0}")]
    Profile(String),
    /// Our database failed.
    #[error("the database is unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// The Pipedrive user who installed, from `/users/me`.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Pipedrive user id.
    pub user_id: i64,
    /// Pipedrive company id.
    pub company_id: i64,
    /// Company name.
    pub company_name: Option<String>,
    /// Company subdomain.
    pub company_domain: Option<String>,
    /// User's name.
    pub user_name: Option<String>,
    /// User's e-mail.
    pub user_email: Option<String>,
}

impl Profile {
    fn from_users_me(body: &Value) -> Result<Self, InstallError> {
        let data = body.get("data").unwrap_or(body);
        let id = |key: &str| {
            data.get(key)
                .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                .ok_or_else(|| InstallError::Profile(format!("/users/me has no numeric {key}")))
        };
        let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            user_id: id("id")?,
            company_id: id("company_id")?,
            company_name: text("company_name"),
            company_domain: text("company_domain"),
            user_name: text("name"),
            user_email: text("email"),
        })
    }
}

/// The video-calling link, as the install left it.
#[derive(Debug, Clone)]
pub enum VideoLink {
    /// Registered with Pipedrive; the browser goes to `redirect` when Pipedrive sent one.
    Registered {
        /// Our `user_provider_id` (`:linkId`).
        link_id: Uuid,
        /// Where Pipedrive wants the user to land.
        redirect: Option<url::Url>,
    },
    /// Pipedrive refused or failed; re-running the install retries.
    Failed(String),
}

/// What a completed install connected.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// The installation id.
    pub installation_id: Uuid,
    /// Who installed.
    pub profile: Profile,
    /// The installation needed re-authorization (or was uninstalled) and works again.
    pub healed: bool,
    /// Each configured number and its channel.
    pub numbers: Vec<NumberReport>,
    /// The video-calling link, when the app holds the `video-calls` scope.
    pub video: Option<VideoLink>,
}

/// Completes an install from the authorization `code` of the OAuth callback.
#[tracing::instrument(skip_all)]
pub async fn complete(state: &AppState, code: &str) -> Result<InstallReport, InstallError> {
    let tokens = state.pipedrive.oauth().exchange_code(code).await?;
    let api_domain = tokens
        .api_domain
        .as_deref()
        .ok_or_else(|| InstallError::Incomplete("no api_domain".into()))
        .and_then(|d| super::api_domain(d).map_err(InstallError::Incomplete))?;
    let refresh_token = tokens
        .refresh_token
        .as_ref()
        .ok_or_else(|| InstallError::Incomplete("no refresh_token".into()))?;
    let me = state
        .pipedrive
        .request_with_token(
            &api_domain,
            &tokens.access_token,
            Method::GET,
            "/api/v1/users/me",
            None,
        )
        .await
        .map_err(|e| InstallError::Profile(e.to_string()))?;
    let profile = Profile::from_users_me(&me.body)?;

    let access_enc = state.keys.seal(tokens.access_token.expose_secret());
    let refresh_enc = state.keys.seal(refresh_token.expose_secret());
    let mut tx = state.db.begin().await?;
    let installed = installations::upsert(
        &mut tx,
        &NewInstallation {
            company_id: profile.company_id,
            user_id: profile.user_id,
            company_name: profile.company_name.as_deref(),
            company_domain: profile.company_domain.as_deref(),
            user_name: profile.user_name.as_deref(),
            user_email: profile.user_email.as_deref(),
            api_domain: &api_domain,
            access_token_enc: &access_enc,
            refresh_token_enc: &refresh_enc,
            token_expires_at: tokens.expires_at,
            scopes: &tokens.scopes,
        },
    )
    .await?;
    // Work parked while the installation could not call Pipedrive resumes with the new tokens.
    let resumed = queue::unpark(&mut *tx, &park_tag(installed.id)).await?;
    tx.commit().await?;
    let healed = matches!(
        installed.previous_status,
        Some(InstallationStatus::NeedsReauth | InstallationStatus::Uninstalled)
    );
    tracing::info!(
        installation_id = %installed.id,
        company_id = profile.company_id,
        user_id = profile.user_id,
        healed,
        resumed,
        "installation stored"
    );

    let owner = Owner {
        installation_id: installed.id,
        company_id: profile.company_id,
    };
    let numbers = channels::register_all(state, owner).await?;
    let video = if tokens.scopes.iter().any(|s| s == VIDEO_SCOPE) {
        Some(link_video(state, installed.id, &profile).await?)
    } else {
        None
    };
    Ok(InstallReport {
        installation_id: installed.id,
        profile,
        healed,
        numbers,
        video,
    })
}

/// Registers the installation's video-calling link (one per installation, reused on
/// re-install) with Pipedrive.
async fn link_video(
    state: &AppState,
    installation_id: Uuid,
    profile: &Profile,
) -> Result<VideoLink, sqlx::Error> {
    let mut conn = state.db.acquire().await?;
    let link_id = video_links::ensure_active(
        &mut conn,
        Uuid::new_v4(),
        installation_id,
        profile.company_id,
        profile.user_id,
    )
    .await?;
    drop(conn);
    let body = json!({
        "user_provider_id": link_id,
        "user_id": profile.user_id,
        "company_id": profile.company_id,
        "marketplace_client_id": state.config.pipedrive.client_id,
    });
    let answer = state
        .pipedrive
        .request(
            installation_id,
            Method::POST,
            "/api/v1/meetings/userProviderLinks",
            Some(&body),
        )
        .await;
    Ok(match answer {
        Ok(response) => VideoLink::Registered {
            link_id,
            redirect: redirect_url(&response.body),
        },
        Err(error) => {
            tracing::warn!(%installation_id, %error, "video-calling link registration failed");
            VideoLink::Failed(error.to_string())
        }
    })
}

/// `redirectUrl` from the link registration (top-level or under `data`), when it is https.
fn redirect_url(body: &Value) -> Option<url::Url> {
    ["/redirectUrl", "/data/redirectUrl"]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str))
        .and_then(|u| url::Url::parse(u).ok())
        .filter(|u| u.scheme() == "https")
}

/// What an uninstall notice changed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uninstalled {
    /// Installations whose tokens were deleted.
    pub installations: usize,
    /// Channels disabled.
    pub channels: u64,
    /// Video links marked removed.
    pub video_links: u64,
}

/// Pipedrive's uninstall notice: deletes the tokens of the company's installation (one user's
/// when `user_id` is given), disables its channels and video links. History stays.
pub async fn uninstall(
    db: &sqlx::PgPool,
    company_id: i64,
    user_id: Option<i64>,
) -> Result<Uninstalled, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ids = installations::uninstall(&mut tx, company_id, user_id).await?;
    let channels = channel_rows::disable_for_installations(&mut *tx, &ids).await?;
    let video_links = video_links::remove_for_installations(&mut *tx, &ids).await?;
    tx.commit().await?;
    Ok(Uninstalled {
        installations: ids.len(),
        channels,
        video_links,
    })
}

/// Whether the error page should blame the request (4xx) rather than a dependency.
pub fn is_client_error(error: &InstallError) -> bool {
    matches!(error, InstallError::Exchange(OAuthError::InvalidGrant(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_need_user_and_company_ids() {
        let me = json!({"success": true, "data": {"id": 13554862, "company_id": "7720311",
            "company_name": "Acme", "name": "Jonas", "email": "j@acme.test"}});
        let profile = Profile::from_users_me(&me).unwrap();
        assert_eq!((profile.user_id, profile.company_id), (13554862, 7720311));
        assert_eq!(profile.company_name.as_deref(), Some("Acme"));
        assert!(Profile::from_users_me(&json!({"data": {"id": 1}})).is_err());
    }

    #[test]
    fn only_https_redirects_are_followed() {
        let top = json!({"redirectUrl": "https://app.pipedrive.com/settings/video"});
        assert!(redirect_url(&top).is_some());
        let nested = json!({"data": {"redirectUrl": "https://app.pipedrive.com/x"}});
        assert!(redirect_url(&nested).is_some());
        assert!(redirect_url(&json!({"redirectUrl": "javascript:alert(1)"})).is_none());
        assert!(redirect_url(&json!({"data": {"message": "ok"}})).is_none());
    }
}
