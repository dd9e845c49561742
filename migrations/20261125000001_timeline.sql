-- The CRM timeline: conversations written into Pipedrive as notes on the customer's person, one
-- note per conversation per UTC day (rolled over into further parts when it grows too big),
-- rewritten in place as the conversation goes on.

-- Which Pipedrive person a customer's number belongs to, per company. `linked` carries the
-- person; `ambiguous` (several persons have the number) and `missing` (none has it, and persons
-- are not created) are remembered too, so that the search is not repeated on every message.
CREATE TABLE timeline_persons (
    company_id  bigint      NOT NULL,
    phone       text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('linked', 'ambiguous', 'missing')),
    person_id   bigint,
    candidates  bigint[]    NOT NULL DEFAULT '{}',
    checked_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, phone),
    CHECK ((state = 'linked') = (person_id IS NOT NULL))
);

-- One conversation-day. `version` counts the changes reported for it; `written_version` is the
-- one the last write covered, so a write that overlapped a change knows to run again. The
-- person, deal and lead are decided at the day's first write and kept for its notes.
CREATE TABLE timeline_days (
    conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    day              date        NOT NULL,
    company_id       bigint      NOT NULL,
    version          bigint      NOT NULL DEFAULT 0,
    written_version  bigint      NOT NULL DEFAULT 0,
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'written', 'no_person')),
    reason           text,
    person_id        bigint,
    deal_id          bigint,
    lead_id          text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, day)
);
CREATE INDEX timeline_days_company_idx ON timeline_days (company_id, day);

-- The Pipedrive note of one part of a conversation-day and a hash of what it last received, so
-- an unchanged transcript is never sent again.
CREATE TABLE timeline_notes (
    conversation_id  uuid        NOT NULL,
    day              date        NOT NULL,
    part             integer     NOT NULL CHECK (part >= 0),
    note_id          bigint      NOT NULL,
    content_hash     text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, day, part),
    FOREIGN KEY (conversation_id, day) REFERENCES timeline_days (conversation_id, day) ON DELETE CASCADE
);

-- Pipedrive API tokens the timeline spent per company per UTC day.
CREATE TABLE timeline_budget (
    company_id  bigint  NOT NULL,
    day         date    NOT NULL,
    tokens      bigint  NOT NULL DEFAULT 0,
    calls       integer NOT NULL DEFAULT 0,
    warned      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (company_id, day)
);
