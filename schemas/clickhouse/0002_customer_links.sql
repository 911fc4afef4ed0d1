-- journey-streams ClickHouse schema, version 2: what the customer-level figures need per
-- session (docs/metrics.md, "Customer level"). Runs on ClickHouse 18.16 and chdb 26.x.
-- 18.16 has no ADD COLUMN IF NOT EXISTS: the migration runner adds a column only when
-- DESCRIBE does not list it (streams/clickhouse/migrations.py), so this stays idempotent.

-- The session's identity link: the user_id, time and event_id of its earliest event carrying
-- both an anonymous_id and a user_id ('', 0, '' without one). A visitor's customer key is
-- the user_id of its earliest link among its live sessions, taken at query time, so a merged
-- or re-identified session (tombstoned) takes its link with it.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS link_user_id String AFTER closed;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS link_ms UInt64 AFTER link_user_id;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS link_event_id String AFTER link_ms;

-- Times of the session's first and last purchase event (0 without one): the weeks in which a
-- session has purchase events, for the cohorts (a session is shorter than a week, so its
-- purchase weeks are those of these two times).
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS first_purchase_ms UInt64 AFTER link_event_id;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS last_purchase_ms UInt64 AFTER first_purchase_ms;
