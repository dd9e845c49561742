//! The pages a user sees at the end of an install: what is connected and what to do next, or
//! why it failed.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::Response;

use super::channels::Registration;
use super::install::{InstallReport, VideoLink};
use crate::http::assets::CHANNEL_ICON_PATH;
use crate::http::html::{escape, page};

/// The install result: company, user, each number with its channel and mode, next steps.
pub fn installed(report: &InstallReport, install_url: &str) -> Response {
    let p = &report.profile;
    let mut body = String::new();
    let company = p.company_name.as_deref().unwrap_or("your company");
    let user = p.user_name.as_deref().unwrap_or("you");
    let _ = write!(
        body,
        "<p class=\"ok\">Pipedrive company <strong>{}</strong> (id {}) is connected by \
         <strong>{}</strong>{} (user id {}).</p>",
        escape(company),
        p.company_id,
        escape(user),
        p.user_email
            .as_deref()
            .map(|e| format!(" &lt;{}&gt;", escape(e)))
            .unwrap_or_default(),
        p.user_id,
    );
    if report.healed {
        body.push_str("<p>The connection works again; paused deliveries resume now.</p>");
    }
    let _ = write!(
        body,
        "<h2><img src=\"{CHANNEL_ICON_PATH}\" alt=\"\" width=\"24\" height=\"24\"> WhatsApp numbers</h2><ul>"
    );
    for number in &report.numbers {
        let display = number
            .display_phone_number
            .as_deref()
            .unwrap_or("(number unknown)");
        let name = number
            .verified_name
            .as_deref()
            .map(|n| format!(" — {}", escape(n)))
            .unwrap_or_default();
        let channel = number
            .pipedrive_channel_id
            .as_deref()
            .map(|id| format!(" (Pipedrive channel <code>{}</code>)", escape(id)))
            .unwrap_or_default();
        let outcome = match &number.registration {
            Registration::Created { .. } => {
                format!("<span class=\"ok\">Channel created{channel}. Mode: inbox.</span>")
            }
            Registration::AlreadyRegistered => {
                format!("<span class=\"ok\">Channel already registered{channel}. Mode: inbox.</span>")
            }
            Registration::Timeline => "<span class=\"warn\">Pipedrive has retired its Channels API. \
                 Mode: timeline — messages are recorded on the contact's CRM timeline.</span>"
                .to_string(),
            Registration::AdminOnly { message } => format!(
                "<span class=\"err\">Not registered: only Pipedrive admins can add messaging \
                 channels (Pipedrive said: {}). Ask an admin of your company to open \
                 <a href=\"{url}\">{url}</a>; your installation is kept.</span>",
                escape(message),
                url = escape(install_url),
            ),
            Registration::OtherCompany => "<span class=\"err\">Not registered: this number is \
                 already a channel of another Pipedrive company.</span>"
                .to_string(),
            Registration::Failed(cause) => format!(
                "<span class=\"err\">Not registered: {}. Run the install again to retry.</span>",
                escape(cause)
            ),
        };
        let _ = write!(
            body,
            "<li><strong>{}</strong>{name} <small>(phone number id {})</small><br>{outcome}</li>",
            escape(display),
            escape(&number.phone_number_id),
        );
    }
    body.push_str("</ul>");
    if let Some(video) = &report.video {
        body.push_str("<h2>Video calls</h2>");
        match video {
            VideoLink::Registered { .. } => body
                .push_str("<p class=\"ok\">Video calling is linked: add a video call to any activity.</p>"),
            VideoLink::Failed(cause) => {
                let _ = write!(
                    body,
                    "<p class=\"err\">Video calling could not be linked: {}. Run the install \
                     again to retry.</p>",
                    escape(cause)
                );
            }
        }
    }
    body.push_str("<h2>What next</h2><ul>");
    let modes = || report.numbers.iter().map(|n| &n.registration);
    if modes().any(|r| matches!(r, Registration::Created { .. } | Registration::AlreadyRegistered)) {
        body.push_str(
            "<li>Open Pipedrive's Messaging inbox: WhatsApp conversations of the numbers in \
             inbox mode appear there, and replies go out through WhatsApp.</li>",
        );
    }
    if modes().any(|r| matches!(r, Registration::Timeline)) {
        body.push_str(
            "<li>Numbers in timeline mode write each conversation to the matching person's \
             timeline in Pipedrive.</li>",
        );
    }
    if modes().any(|r| {
        matches!(
            r,
            Registration::AdminOnly { .. } | Registration::Failed(_) | Registration::OtherCompany
        )
    }) {
        body.push_str("<li>Fix the problems above, then run the install again; it is safe to repeat.</li>");
    }
    body.push_str("<li>Send a WhatsApp message to one of the numbers to check the connection.</li></ul>");
    page(StatusCode::OK, "WhatsApp is connected to Pipedrive", &body)
}

/// The user cancelled on Pipedrive's consent screen.
pub fn denied(install_url: &str) -> Response {
    page(
        StatusCode::OK,
        "Nothing was installed",
        &format!(
            "<p>You cancelled the installation in Pipedrive, so nothing was connected.</p>\
             <p>To connect WhatsApp later, open <a href=\"{url}\">{url}</a>.</p>",
            url = escape(install_url)
        ),
    )
}

/// An install that failed, with its cause and the way out.
pub fn failed(status: StatusCode, cause: &str, install_url: &str) -> Response {
    page(
        status,
        "The installation did not complete",
        &format!(
            "<p class=\"err\">{}</p><p>Start again from \
             <a href=\"{url}\">{url}</a>.</p>",
            escape(cause),
            url = escape(install_url)
        ),
    )
}
