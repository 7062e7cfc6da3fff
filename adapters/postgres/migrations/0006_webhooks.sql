-- Webhooks (issue 6): users' endpoints, the versions of their signing secrets, and deliveries.
-- Ids are UUIDv7 (time-ordered), so `ORDER BY id DESC` is newest first and keyset pages compare ids.

-- Where a user wants events delivered (core.webhooks.endpoints). `events` empty: every type. The
-- event types are not checked here: a new type must not need a migration.
CREATE TABLE webhook_endpoints (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url             text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    events          text[]      NOT NULL DEFAULT '{}',
    status          text        NOT NULL CHECK (status IN ('active', 'disabled')),
    disabled_reason text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- A user's endpoints: newest first for GET /v1/webhook-endpoints, oldest first for the fan-out
-- (`list_subscribed`, which filters status and events on the few rows of one user).
CREATE INDEX webhook_endpoints_by_user ON webhook_endpoints (user_id, id DESC);

-- Versions of signing secrets (core.webhooks.signing_secrets): a salt and the master key version
-- it was derived with, never the secret. The owner is an endpoint (owner_id = its id) or an
-- account (owner_id = the user's id), so owner_id has no foreign key; the endpoint repository
-- deletes an endpoint's versions with it, and the user's foreign key takes the rest.
CREATE TABLE webhook_secrets (
    id          uuid        PRIMARY KEY,
    owner       text        NOT NULL CHECK (owner IN ('endpoint', 'account')),
    owner_id    uuid        NOT NULL,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_version text        NOT NULL,
    salt        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz  -- set when a rotation replaced it; it signs until then
);

-- At most one current version per owner. Two first uses that race both insert; the second waits
-- for the first and, once it commits, inserts nothing (`add` answers False and the caller reads
-- the winner). Also serves `current_for_update`.
CREATE UNIQUE INDEX webhook_secrets_one_current ON webhook_secrets (owner, owner_id)
    WHERE expires_at IS NULL;

-- `live`: an owner's versions (a handful: the current one and those still in their overlap).
CREATE INDEX webhook_secrets_by_owner ON webhook_secrets (owner, owner_id, created_at DESC);

-- The clean-up (`delete_expired`); current versions stay out of it.
CREATE INDEX webhook_secrets_by_expiry ON webhook_secrets (expires_at) WHERE expires_at IS NOT NULL;

-- The users foreign key: deleting a user finds their versions without reading the whole table.
CREATE INDEX webhook_secrets_by_user ON webhook_secrets (user_id);

-- One event on its way to one target (core.webhooks.deliveries), the source of truth of what was
-- sent and what is due. `endpoint_id` has no foreign key: deleting an endpoint keeps the record of
-- its deliveries. It is NULL for a per-request `webhook_url` (signed with the account's secret).
-- `event_id` is the outbox message's id (text, like `outbox.id`) and the `webhook-id` header.
CREATE TABLE webhook_deliveries (
    id                uuid        PRIMARY KEY,
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint_id       uuid,
    url               text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    event_id          text        NOT NULL,
    event_type        text        NOT NULL,
    event_occurred_at timestamptz NOT NULL,
    data              jsonb       NOT NULL,
    status            text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
    attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      integer     NOT NULL CHECK (max_attempts >= 1),
    next_attempt_at   timestamptz,
    last_status_code  integer,
    last_error        text,
    last_attempt_at   timestamptz,
    delivered_at      timestamptz,
    locked_until      timestamptz,  -- the lease: while it lies ahead, a job is on its way or sending
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- A pending delivery without a time would never be claimed: it would wait forever.
    CHECK (status <> 'pending' OR next_attempt_at IS NOT NULL)
);

-- What makes `add` idempotent: an event re-published after a crash finds its deliveries there.
-- Per endpoint for registered endpoints, per URL for per-request webhooks.
CREATE UNIQUE INDEX webhook_deliveries_once_per_endpoint ON webhook_deliveries (event_id, endpoint_id)
    WHERE endpoint_id IS NOT NULL;
CREATE UNIQUE INDEX webhook_deliveries_once_per_url ON webhook_deliveries (event_id, url)
    WHERE endpoint_id IS NULL;

-- The dispatcher's claim (`claim_due`): pending deliveries, earliest due first. Partial, so it stays
-- as small as the work in flight however many finished deliveries pile up.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE status = 'pending';

-- GET /v1/webhook-endpoints/{id}/deliveries, newest first in keyset pages; also finds an
-- endpoint's pending deliveries to cancel (`cancel_pending_for_endpoint`).
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id DESC);

-- The users foreign key: deleting a user finds their deliveries without reading the whole table.
CREATE INDEX webhook_deliveries_by_user ON webhook_deliveries (user_id);
