-- Only jobs that carry a dedup key have an entry in its unique index. The delivery of a message
-- just stored carries none (the message's own uniqueness makes it the only one), and an entry
-- per job was written again on every claim and settle of the row.
ALTER TABLE jobs DROP CONSTRAINT jobs_dedup_key_key;
CREATE UNIQUE INDEX jobs_dedup_key_idx ON jobs (dedup_key) WHERE dedup_key IS NOT NULL;
