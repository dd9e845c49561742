-- The queue, the webhook inbox and conversations change every row they hold within seconds
-- (a job is inserted, claimed and settled; a conversation is touched by each message), so
-- autovacuum visits them after a small share of their rows changed instead of the default 20 %.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02,
                      autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE webhook_events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER TABLE conversations SET (autovacuum_vacuum_scale_factor = 0.02);
