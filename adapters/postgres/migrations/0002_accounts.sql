-- Accounts and access (issue 3): users, API keys, one-time email tokens, and the audit log.
-- Ids are UUIDv7 (time-ordered), so `ORDER BY id DESC` is newest first and keyset pages compare ids.

CREATE TABLE users (
    id               uuid        PRIMARY KEY,
    email            text        NOT NULL,
    email_normalized text        NOT NULL,
    display_name     text,
    role             text        NOT NULL CHECK (role IN ('user', 'admin')),
    status           text        NOT NULL CHECK (status IN ('active', 'suspended')),
    email_verified   boolean     NOT NULL DEFAULT false,
    password_hash    text        NOT NULL,
    plan             text        NOT NULL DEFAULT 'free',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT users_email_normalized_key UNIQUE (email_normalized)
);

-- The admin list filtered by status, newest first. The unfiltered list walks the primary key
-- backwards; the email filter is a substring match, a scan that is fine at admin request rates.
CREATE INDEX users_by_status ON users (status, id DESC);

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    key_hash     text        NOT NULL UNIQUE,  -- SHA-256 hex: the lookup on every keyed request
    scopes       text[]      NOT NULL,
    allowed_ips  text[]      NOT NULL,  -- CIDR blocks as validated by the core; empty: anywhere
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- A user's live keys, newest first; revoked keys leave the index.
CREATE INDEX api_keys_live_by_user ON api_keys (user_id, id DESC) WHERE revoked_at IS NULL;

CREATE TABLE one_time_tokens (
    token_hash text        PRIMARY KEY,  -- SHA-256 hex of the emailed token
    purpose    text        NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

-- Using up a user's outstanding tokens of one purpose (a newer link was sent); used ones leave it.
CREATE INDEX one_time_tokens_unused_by_user ON one_time_tokens (user_id, purpose) WHERE used_at IS NULL;

-- No foreign keys: the record of what happened outlives the users it names, and failed logins
-- have no actor.
CREATE TABLE audit_log (
    id             uuid        PRIMARY KEY,
    occurred_at    timestamptz NOT NULL,
    action         text        NOT NULL,
    actor_id       text,  -- text, like target_id: an actor or target need not be a user
    target_type    text,
    target_id      text,
    ip             text,
    correlation_id text,
    details        jsonb       NOT NULL DEFAULT '{}'
);

-- The filtered lists of GET /admin/audit, newest first (the unfiltered one uses the primary key).
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, id DESC);
CREATE INDEX audit_log_by_target ON audit_log (target_id, id DESC);
CREATE INDEX audit_log_by_action ON audit_log (action, id DESC);

-- Append-only. The application connects as the tables' owner, so revoking UPDATE and DELETE would
-- not bind it; a trigger does, whoever runs the statement.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
