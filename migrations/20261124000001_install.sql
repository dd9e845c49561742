-- A user has at most one live video-calling link per installation: re-installing reuses it
-- instead of registering a second `user_provider_id` with Pipedrive.
CREATE UNIQUE INDEX video_links_one_active_idx ON video_links (installation_id) WHERE removed_at IS NULL;

-- /readyz lists the installations waiting for a new consent.
CREATE INDEX installations_status_idx ON installations (status);
