-- Sending from Pipedrive: when a send attempt last started (to tell "maybe sent" from "not
-- sent" after a timeout), WhatsApp's id of each extra media part of a message, and the
-- freshness of cached data (templates).

ALTER TABLE messages ADD COLUMN send_attempted_at timestamptz;

-- A message from Pipedrive with several files becomes several WhatsApp messages; the first
-- one's wamid is on the message, the others' on their attachment.
ALTER TABLE attachments ADD COLUMN wamid text;
CREATE INDEX attachments_wamid_idx ON attachments (wamid) WHERE wamid IS NOT NULL;

CREATE TABLE sync_state (
    key        text        PRIMARY KEY,
    synced_at  timestamptz,
    stale      boolean     NOT NULL DEFAULT true
);
