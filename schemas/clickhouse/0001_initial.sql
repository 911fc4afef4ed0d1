-- journey-streams ClickHouse schema, version 1. Runs unchanged on ClickHouse 18.16 and chdb 26.x.
-- Times are UInt64 epoch milliseconds (18.16 has no DateTime64). Every table whose rows can be
-- rewritten is a ReplacingMergeTree(version) read with FINAL; deleted = 1 is a tombstone.

-- One row per session (SessionRow); rewritten as the session grows, tombstoned when merged
-- into another. Partitioned by start month and sorted by (start_ms, session_id): a session_id
-- always keeps its start_ms (the id is derived from the first event), so every version of a
-- session lands in the same partition with the same sort key, which ReplacingMergeTree needs
-- to replace it. Sorting by start lets the rollup refresh read only the minutes it touched
-- (sorted by session_id alone it scanned the month: 0.8-1.2 s per flush with 1M sessions;
-- benchmarks/bench_rollup_refresh.py).
CREATE TABLE IF NOT EXISTS sessions (
    session_id String,
    visitor_key String,
    anonymous_id String,
    user_id String,
    customer_key String,
    start_ms UInt64,
    end_ms UInt64,
    duration_ms UInt64,
    events UInt32,
    page_views UInt32,
    interactions UInt32,
    dwell_sum_ms UInt64,
    dwell_count UInt32,
    landing_page String,
    exit_page String,
    referrer String,
    channel String,
    source String,
    medium String,
    campaign String,
    device String,
    furthest_stage String,
    furthest_stage_rank UInt8,
    reached_consideration UInt8,
    reached_purchase UInt8,
    retention UInt8,
    advocacy UInt8,
    returning UInt8,
    bounced UInt8,
    engaged UInt8,
    converted UInt8,
    has_cart UInt8,
    cart_adds UInt32,
    cart_value Float64,
    purchases UInt32,
    orders UInt32,
    revenue Float64,
    csat_responses UInt32,
    csat_satisfied UInt32,
    nps_responses UInt32,
    nps_promoters UInt32,
    nps_detractors UInt32,
    closed UInt8,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDateTime(intDiv(start_ms, 1000)))
ORDER BY (start_ms, session_id);

-- One row per order (OrderRow). Not partitioned: an order's time may move earlier when a late
-- duplicate purchase event arrives, and versions in different partitions would never replace.
CREATE TABLE IF NOT EXISTS orders (
    order_key String,
    order_id String,
    session_id String,
    visitor_key String,
    customer_key String,
    ts_ms UInt64,
    revenue Float64,
    currency String,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY order_key;

-- Every accepted input event, for audit and for recomputing figures independently of the
-- engine. Deduplicated by event_id; not partitioned for the same reason as orders.
CREATE TABLE IF NOT EXISTS raw_events (
    event_id String,
    event_type String,
    ts_ms UInt64,
    visitor_key String,
    anonymous_id String,
    user_id String,
    session_id String,
    page_path String,
    referrer String,
    product_id String,
    order_id String,
    revenue Float64,
    price Float64,
    quantity UInt32,
    score Float64,
    scale UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

-- Per-minute rollup of sessions by start minute, channel, device and furthest stage, with the
-- survey (CSAT, NPS) counts. Recomputed for touched minutes from sessions FINAL by the writer
-- (refresh_rollups): old keys of a minute are first overwritten with zeros, then the fresh
-- aggregate is written with a higher version, so re-running a refresh never double counts.
CREATE TABLE IF NOT EXISTS session_minutes (
    minute_ms UInt64,
    minute DateTime,
    channel String,
    device String,
    furthest_stage String,
    sessions UInt64,
    events UInt64,
    page_views UInt64,
    bounced UInt64,
    engaged UInt64,
    converted UInt64,
    reached_consideration UInt64,
    reached_purchase UInt64,
    has_cart UInt64,
    abandoned_carts UInt64,
    retention UInt64,
    advocacy UInt64,
    duration_ms UInt64,
    dwell_sum_ms UInt64,
    dwell_count UInt64,
    orders UInt64,
    revenue Float64,
    csat_responses UInt64,
    csat_satisfied UInt64,
    nps_responses UInt64,
    nps_promoters UInt64,
    nps_detractors UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute_ms, channel, device, furthest_stage);

-- Customers (CLV, retention), derived on read from sessions and orders so it can never
-- disagree with them. The joined subqueries carry aliases: 26.x requires them, 18.16 allows them.
CREATE VIEW IF NOT EXISTS customers AS
SELECT
    customer_key,
    first_seen_ms,
    sessions,
    first_purchase_ms,
    orders,
    revenue
FROM (
    SELECT customer_key, min(start_ms) AS first_seen_ms, count() AS sessions
    FROM sessions FINAL
    WHERE deleted = 0
    GROUP BY customer_key
) AS seen
ANY LEFT JOIN (
    SELECT customer_key, min(ts_ms) AS first_purchase_ms, count() AS orders, sum(revenue) AS revenue
    FROM orders FINAL
    WHERE deleted = 0
    GROUP BY customer_key
) AS bought USING customer_key;
