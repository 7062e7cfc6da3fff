-- Plans, subscriptions and quotas (issue 4): each user's subscription, the charges ledger, image
-- usage per billing period, and the quota reservations of generations. Money is integer cents.

CREATE TABLE subscriptions (
    user_id              uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    plan                 text        NOT NULL,  -- a plan code of the catalog (a file, not a table)
    status               text        NOT NULL
        CHECK (status IN ('trialing', 'active', 'past_due', 'canceled', 'expired')),
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    cancel_at_period_end boolean     NOT NULL DEFAULT false,
    scheduled_plan       text,  -- a downgrade waiting for the period's end
    trial_end            timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    CHECK (current_period_end > current_period_start)
);

-- The roll-over's claim (`claim_due`): due subscriptions, earliest first. A trial's end counts only
-- while trialing; the expression must match the repository's query word for word.
CREATE INDEX subscriptions_by_due_at ON subscriptions ((
    CASE WHEN status = 'trialing' THEN LEAST(current_period_end, trial_end) ELSE current_period_end END
), user_id);

CREATE TABLE charges (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan         text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('proration', 'renewal')),
    amount_cents bigint      NOT NULL CHECK (amount_cents >= 0),
    currency     text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL
);

-- A user's charges, newest first (ids are time-ordered).
CREATE INDEX charges_by_user ON charges (user_id, id DESC);

-- One row per user and billing period. `images_used` counts settled and reserved images; a
-- reservation's check-and-increment is one conditional statement on this row (its row lock
-- serializes racing processes), and the CHECKs are the last line against a lost or doubled refund.
CREATE TABLE usage_periods (
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    images_used        integer     NOT NULL DEFAULT 0 CHECK (images_used >= 0),
    in_flight          integer     NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    thresholds_reached integer[]   NOT NULL DEFAULT '{}',  -- percentages already announced
    PRIMARY KEY (user_id, period_start),
    CHECK (period_end > period_start)
);

-- One per generation (the id is the generation's). It ends once: `reserved` → `settled` or
-- `refunded`. No foreign key to `usage_periods`: the reservation row is written first, so that a
-- retried reservation is recognized before any limit is checked.
CREATE TABLE quota_reservations (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period_start timestamptz NOT NULL,
    images       integer     NOT NULL CHECK (images > 0),
    status       text        NOT NULL CHECK (status IN ('reserved', 'settled', 'refunded')),
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    CHECK ((status = 'reserved') = (finished_at IS NULL))
);

-- Existing users keep their plan: an active subscription whose first month starts now (in UTC,
-- where `+ 1 month` clamps Jan 31 to Feb 28 as core.billing.periods does).
INSERT INTO subscriptions (user_id, plan, status, current_period_start, current_period_end, created_at, updated_at)
SELECT id, plan, 'active', now(), (now() AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC', now(), now()
FROM users;
