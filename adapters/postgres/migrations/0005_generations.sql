-- Generations, their images, uploaded init images and idempotency records (issue 5).

-- Uploaded init images; the bytes live in the blob store under blob_key.
CREATE TABLE uploads (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blob_key     text        NOT NULL,
    content_type text        NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/webp')),
    width        integer     NOT NULL CHECK (width > 0),
    height       integer     NOT NULL CHECK (height > 0),
    bytes        bigint      NOT NULL CHECK (bytes >= 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL
);

-- A user's uploads, newest first (ids are time-ordered).
CREATE INDEX uploads_by_user ON uploads (user_id, id DESC);

-- The generation aggregate (core.generations.generation). The id is also its quota reservation's
-- and its job's. `init_image_id` has no foreign key: deleting an upload must not rewrite the
-- history of the generations that used it.
CREATE TABLE generations (
    id                uuid             PRIMARY KEY,
    user_id           uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status            text             NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    prompt            text             NOT NULL CHECK (length(prompt) BETWEEN 1 AND 4000),
    negative_prompt   text             CHECK (length(negative_prompt) <= 4000),
    size              text             NOT NULL,
    width             integer          NOT NULL CHECK (width > 0),
    height            integer          NOT NULL CHECK (height > 0),
    n                 integer          NOT NULL CHECK (n BETWEEN 1 AND 100),
    seed              bigint           NOT NULL CHECK (seed BETWEEN 0 AND 4294967295),
    style             text,
    init_image_id     uuid,
    webhook_url       text,
    priority          boolean          NOT NULL DEFAULT false,
    retention_days    integer          NOT NULL CHECK (retention_days > 0),
    progress          double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    error_code        text,
    error_message     text,
    attempts          integer          NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at        timestamptz      NOT NULL,
    updated_at        timestamptz      NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    images_expire_at  timestamptz,
    images_expired_at timestamptz,
    -- Terminal states, and only they, have finished_at; only failures have an error code.
    CHECK ((status IN ('succeeded', 'failed', 'canceled')) = (finished_at IS NOT NULL)),
    CHECK ((status = 'failed') = (error_code IS NOT NULL))
);

-- GET /v1/generations: a user's generations, newest first, with or without a status filter.
CREATE INDEX generations_by_user ON generations (user_id, id DESC);
CREATE INDEX generations_by_user_status ON generations (user_id, status, id DESC);

-- The reconciler (`list_stuck`): unfinished generations by last update. Partial, so it stays as
-- small as the work in flight however many finished generations pile up.
CREATE INDEX generations_unfinished_by_updated_at ON generations (updated_at)
    WHERE status IN ('queued', 'running');

-- Retention (`list_expired_images`): succeeded generations whose images still exist, by expiry.
CREATE INDEX generations_images_by_expiry ON generations (images_expire_at)
    WHERE status = 'succeeded' AND images_expired_at IS NULL;

CREATE TABLE generation_images (
    generation_id uuid    NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    index         integer NOT NULL CHECK (index >= 0),
    blob_key      text    NOT NULL,
    content_type  text    NOT NULL,
    width         integer NOT NULL CHECK (width > 0),
    height        integer NOT NULL CHECK (height > 0),
    bytes         bigint  NOT NULL CHECK (bytes >= 0),
    sha256        text    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (generation_id, index)
);

-- Idempotency-Key records per user and key, kept 24 hours (core.idempotency). The primary key is
-- what makes a claim atomic: a concurrent insert of the same key waits for the first to end.
CREATE TABLE idempotency_keys (
    user_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key              text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint      text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('in_progress', 'completed')),
    response_status  integer,
    response_body    bytea,
    response_headers jsonb       NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (user_id, key),
    CHECK ((status = 'completed') = (response_status IS NOT NULL))
);

-- The clean-up (`delete_expired`).
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
