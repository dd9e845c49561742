-- Jobs inserted already leased to a worker (a fresh delivery handed straight to the workers of
-- the process that stored its message) need nobody woken: only a statement that queues a job
-- notifies. The transition table holds the statement's inserted rows.
CREATE OR REPLACE FUNCTION notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE state = 'queued') THEN
        PERFORM pg_notify('jobs', '');
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER jobs_notify ON jobs;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION notify_jobs();
