-- Where each consumer group has got to, per partition: the offset of the next message to read.
-- archive and analytics update it in the same transaction as the rows they write, so after a
-- crash the rows and the position always agree (PostgreSQL, not Kafka, is the source of truth).
CREATE TABLE consumer_offsets (
  group_id    text        NOT NULL,
  topic       text        NOT NULL,
  partition   integer     NOT NULL,
  next_offset bigint      NOT NULL CHECK (next_offset >= 0),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, partition)
);
