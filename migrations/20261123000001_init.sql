-- The whole domain of the bridge: who installed us in Pipedrive, which WhatsApp numbers are
-- channels, the conversation history we serve to Pipedrive, the raw webhook inbox and the durable
-- job queue that carries every outbound call.

-- A Pipedrive user who authorised the app, keyed by Pipedrive's (company_id, user_id).
-- Tokens are AES-256-GCM sealed by the application; no column ever holds one in clear.
CREATE TABLE installations (
    id                 uuid PRIMARY KEY,
    company_id         bigint      NOT NULL,
    user_id            bigint      NOT NULL,
    company_name       text,
    company_domain     text,
    user_name          text,
    user_email         text,
    api_domain         text        NOT NULL,
    access_token_enc   bytea,
    refresh_token_enc  bytea,
    token_expires_at   timestamptz,
    scopes             text[]      NOT NULL DEFAULT '{}',
    is_shared          boolean     NOT NULL DEFAULT false,
    status             text        NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'needs_reauth', 'uninstalled')),
    status_reason      text,
    installed_at       timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    uninstalled_at     timestamptz,
    UNIQUE (company_id, user_id)
);

-- One row per WhatsApp phone number: the number's phone_number_id is the provider_channel_id
-- Pipedrive puts into every provider URL.
CREATE TABLE channels (
    id                    uuid PRIMARY KEY,
    phone_number_id       text        NOT NULL UNIQUE,
    display_phone_number  text,
    verified_name         text,
    installation_id       uuid        REFERENCES installations (id) ON DELETE SET NULL,
    company_id            bigint,
    pipedrive_channel_id  text,
    mode                  text        NOT NULL DEFAULT 'inbox'
                          CHECK (mode IN ('inbox', 'timeline', 'disabled')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_company_idx ON channels (company_id);

-- A WhatsApp user. wa_id (digits, no '+') may be absent for username users, who are known by
-- their business-scoped user id (BSUID) instead.
CREATE TABLE contacts (
    id            uuid PRIMARY KEY,
    wa_id         text UNIQUE,
    bsuid         text UNIQUE,
    profile_name  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (wa_id IS NOT NULL OR bsuid IS NOT NULL)
);

-- The thread between one channel and one contact.
CREATE TABLE conversations (
    id                uuid PRIMARY KEY,
    channel_id        uuid        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    contact_id        uuid        NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status            text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    seen              boolean     NOT NULL DEFAULT false,
    -- WhatsApp timestamp of the customer's last message: the 24-hour window runs from it.
    last_inbound_at   timestamptz,
    -- Activity order for getConversations (newest first).
    last_message_at   timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, contact_id)
);
CREATE INDEX conversations_activity_idx ON conversations (channel_id, last_message_at DESC, id DESC);

-- Every message in either direction. `id` is ours (uuid v7) and is what Pipedrive sees;
-- `wamid` is WhatsApp's id, unique per channel.
CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    channel_id       uuid        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    direction        text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    wamid            text,
    sender_id        text        NOT NULL,
    kind             text        NOT NULL,
    body             text        NOT NULL DEFAULT '',
    raw              jsonb,
    status           text        NOT NULL
                     CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'read', 'failed')),
    error_code       integer,
    error_title      text,
    error_detail     text,
    reply_to_wamid   text,
    -- When the message was sent, by WhatsApp's clock (inbound) or ours (outbound).
    sent_at          timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, wamid)
);
CREATE INDEX messages_page_idx ON messages (conversation_id, sent_at DESC, id DESC);

-- Media of a message. The bytes live in PostgreSQL so every replica sharing the database can
-- serve them.
CREATE TABLE attachments (
    id           uuid PRIMARY KEY,
    message_id   uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position     integer     NOT NULL DEFAULT 0,
    media_id     text,
    mime_type    text        NOT NULL,
    filename     text,
    size_bytes   bigint,
    sha256       text,
    content      bytea,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'stored', 'failed')),
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_message_idx ON attachments (message_id, position);

-- Signed webhook bodies exactly as received, committed before Meta gets its 200.
CREATE TABLE webhook_events (
    id            bigserial   PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    body          bytea       NOT NULL,
    state         text        NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'processed', 'parked', 'failed')),
    note          text,
    processed_at  timestamptz
);
CREATE INDEX webhook_events_pending_idx ON webhook_events (id) WHERE state = 'pending';

-- The durable job queue behind every outbound call. A job is claimed by setting a lease
-- (locked_until); a crashed worker's lease runs out and the job is claimed again.
-- Jobs sharing an ordering_key run strictly one after another, in id order: a queued, running
-- or parked job holds back every later job of its key (a dead job does not).
CREATE TABLE jobs (
    id             bigserial   PRIMARY KEY,
    kind           text        NOT NULL,
    payload        jsonb       NOT NULL,
    ordering_key   text,
    dedup_key      text        UNIQUE,
    state          text        NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'done', 'parked', 'dead')),
    attempts       integer     NOT NULL DEFAULT 0,
    run_at         timestamptz NOT NULL DEFAULT now(),
    locked_by      text,
    locked_until   timestamptz,
    last_error     text,
    -- What a parked job waits for (e.g. `installation:<id>`); un-parking is by this tag.
    parked_on      text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX jobs_due_idx ON jobs (run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_ordering_idx ON jobs (ordering_key, id) WHERE state IN ('queued', 'running', 'parked');
CREATE INDEX jobs_running_idx ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_parked_idx ON jobs (parked_on, id) WHERE state = 'parked';
CREATE INDEX jobs_dead_idx ON jobs (id) WHERE state = 'dead';

-- One notification per inserting statement wakes idle workers at once (LISTEN jobs).
CREATE FUNCTION notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobs', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs FOR EACH STATEMENT EXECUTE FUNCTION notify_jobs();

-- OAuth `state` values already redeemed: a state is accepted once.
CREATE TABLE oauth_states (
    nonce       text        PRIMARY KEY,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz NOT NULL DEFAULT now()
);

-- Approved WhatsApp templates of the business account, cached for getTemplates and matching.
CREATE TABLE templates (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    language    text        NOT NULL,
    status      text        NOT NULL,
    category    text,
    body_text   text        NOT NULL DEFAULT '',
    components  jsonb       NOT NULL DEFAULT '[]',
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, language)
);

-- Video calling: a user provider link registered with Pipedrive (its id is Pipedrive's :linkId)
-- and the meetings created through it.
CREATE TABLE video_links (
    id               uuid PRIMARY KEY,
    installation_id  uuid        REFERENCES installations (id) ON DELETE SET NULL,
    company_id       bigint      NOT NULL,
    user_id          bigint      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz
);

CREATE TABLE meetings (
    id                text        PRIMARY KEY,
    link_id           uuid        NOT NULL REFERENCES video_links (id) ON DELETE CASCADE,
    topic             text        NOT NULL,
    start_time        timestamptz NOT NULL,
    duration_minutes  integer     NOT NULL CHECK (duration_minutes > 0),
    room              text        NOT NULL UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX meetings_link_idx ON meetings (link_id);
