//! Where a change of a message goes in Pipedrive: the one decision, from `PIPEDRIVE_SINK` and the
//! channel's mode, that deliveries follow.

use crate::config::Sink;
use crate::store::channels::ChannelMode;

/// The sinks one change goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Post it to the Messaging inbox (Channels API).
    pub inbox: bool,
    /// Write it into the CRM timeline.
    pub timeline: bool,
    /// When the Channels API answers 404/410: record the channel as retired and write to the
    /// timeline instead (otherwise the answer is an error, retried and finally dead-lettered).
    pub switch_when_retired: bool,
}

impl Route {
    const NOWHERE: Route = Route {
        inbox: false,
        timeline: false,
        switch_when_retired: false,
    };

    /// Whether the change goes anywhere.
    pub fn is_nowhere(self) -> bool {
        !self.inbox && !self.timeline
    }
}

/// The route of a change on a channel in `mode` under the `sink` setting. A channel records
/// `timeline` once the Channels API answered 404/410 for it (at install or delivery).
pub fn route(sink: Sink, mode: ChannelMode) -> Route {
    let inbox_alive = mode == ChannelMode::Inbox;
    match (sink, mode) {
        (_, ChannelMode::Disabled) => Route::NOWHERE,
        (Sink::Auto, _) => Route {
            inbox: inbox_alive,
            timeline: !inbox_alive,
            switch_when_retired: true,
        },
        (Sink::Inbox, _) => Route {
            inbox: true,
            timeline: false,
            switch_when_retired: false,
        },
        (Sink::Timeline, _) => Route {
            inbox: false,
            timeline: true,
            switch_when_retired: false,
        },
        // The timeline already has every change; the inbox gets them while it exists.
        (Sink::Both, _) => Route {
            inbox: inbox_alive,
            timeline: true,
            switch_when_retired: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sinks(route: Route) -> (bool, bool, bool) {
        (route.inbox, route.timeline, route.switch_when_retired)
    }

    #[test]
    fn auto_follows_the_channel_mode() {
        assert_eq!(sinks(route(Sink::Auto, ChannelMode::Inbox)), (true, false, true));
        assert_eq!(
            sinks(route(Sink::Auto, ChannelMode::Timeline)),
            (false, true, true)
        );
    }

    #[test]
    fn inbox_never_switches_and_timeline_never_posts_to_the_inbox() {
        for mode in [ChannelMode::Inbox, ChannelMode::Timeline] {
            assert_eq!(sinks(route(Sink::Inbox, mode)), (true, false, false));
            assert_eq!(sinks(route(Sink::Timeline, mode)), (false, true, false));
        }
    }

    #[test]
    fn both_writes_the_timeline_and_the_inbox_while_it_exists() {
        assert_eq!(sinks(route(Sink::Both, ChannelMode::Inbox)), (true, true, true));
        assert_eq!(
            sinks(route(Sink::Both, ChannelMode::Timeline)),
            (false, true, true)
        );
    }

    #[test]
    fn disabled_channels_go_nowhere() {
        for sink in [Sink::Auto, Sink::Inbox, Sink::Timeline, Sink::Both] {
            assert!(route(sink, ChannelMode::Disabled).is_nowhere());
        }
    }
}
