-- Transactional outbox (DESIGN.md §3): events are written in the transaction of the state change
-- that caused them and published later, in `position` order, by the maintenance job.
CREATE TABLE outbox (
    id             text        PRIMARY KEY,
    position       bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    type           text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    correlation_id text,
    published_at   timestamptz
);

-- The publisher's claim query reads only unpublished rows in position order; once published, a
-- row leaves this index, so it stays small however long the table grows.
CREATE INDEX outbox_unpublished_by_position ON outbox (position) WHERE published_at IS NULL;
