-- Login sessions (issue 3), for deployments that keep them in PostgreSQL (the embedded default:
-- sessions survive a restart). Only the token's SHA-256 is stored, never the token.
CREATE TABLE sessions (
    id                   uuid        PRIMARY KEY,  -- the public id, for listing and ending a session
    token_hash           text        NOT NULL UNIQUE,  -- SHA-256 hex: the lookup on every request
    user_id              uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at           timestamptz NOT NULL,
    last_seen_at         timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,  -- the absolute end, whatever the activity
    idle_timeout_seconds integer     NOT NULL,
    ip                   text,
    user_agent           text
);

-- A user's sessions, newest first; also serves ending one or all of them.
CREATE INDEX sessions_by_user ON sessions (user_id, created_at DESC, id DESC);

