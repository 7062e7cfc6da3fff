-- Feature flags (issue 7, core.flags): few rows, read whole into each process's snapshot, so the
-- primary key is the only index. Targeting rules, variants and the default value are JSON: their
-- shape is checked in Python (core.flags.model.define_flag) and may grow without a migration.
CREATE TABLE feature_flags (
    key           text        PRIMARY KEY
                              CHECK (length(key) <= 64 AND key ~ '^[a-z0-9]+([._-][a-z0-9]+)*$'),
    description   text        NOT NULL DEFAULT '',
    kind          text        NOT NULL CHECK (kind IN ('boolean', 'variant')),
    enabled       boolean     NOT NULL,
    default_value jsonb       NOT NULL,  -- true/false, or a variant's name
    rules         jsonb       NOT NULL DEFAULT '[]',
    rollout       smallint    NOT NULL CHECK (rollout BETWEEN 0 AND 100),
    variants      jsonb       NOT NULL DEFAULT '[]',
    expires_at    timestamptz,  -- from then on the flag serves its default and is reported stale
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
