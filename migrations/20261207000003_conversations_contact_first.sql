-- A conversation's customer leads its unique key. Removing a customer (the company purge removes
-- all of a company's) makes PostgreSQL find their conversations for the cascade, and with
-- the channel first no index could: each removal read the whole table, and a purge of
-- 100,000 customers took minutes. Lookups by channel alone use the activity index.
ALTER TABLE conversations
    DROP CONSTRAINT conversations_channel_id_contact_id_key,
    ADD CONSTRAINT conversations_contact_id_channel_id_key UNIQUE (contact_id, channel_id);
