-- What `agentwire replay --source postgres` needs to print cursors without asking Kafka: the
-- topic's partition count as the archive last saw it (cursors carry it, and gateways refuse a
-- cursor issued for another partition layout). Written by the archive whenever it learns the
-- count (start, rebalance).
CREATE TABLE archive_topics (
  topic           text        PRIMARY KEY,
  partition_count integer     NOT NULL CHECK (partition_count > 0),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
