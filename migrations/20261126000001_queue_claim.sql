-- The claim's first look: the oldest queued jobs, in id order.
CREATE INDEX jobs_queued_idx ON jobs (id) WHERE state = 'queued';
-- Due jobs without an ordering key, found without walking past a backlog of keyed ones.
CREATE INDEX jobs_due_unordered_idx ON jobs (run_at, id) WHERE state = 'queued' AND ordering_key IS NULL;
