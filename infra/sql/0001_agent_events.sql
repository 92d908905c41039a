-- The archive: one row per Kafka message that decoded into a valid AgentEvent.
-- (topic, partition, offset) is where the message lives in Kafka; event_id is the producer's
-- idempotency key, unique so a message that the producer stored twice is archived once.
CREATE TABLE agent_events (
  topic       text        NOT NULL,
  partition   integer     NOT NULL,
  "offset"    bigint      NOT NULL,
  event_id    text        NOT NULL UNIQUE,
  user_id     text        NOT NULL,
  thread_id   text        NOT NULL,
  run_id      text        NOT NULL,
  run_seq     bigint      NOT NULL,
  type        text        NOT NULL,
  emitted_at  timestamptz,
  agent_name  text        NOT NULL,
  payload     jsonb       NOT NULL,  -- the event's JSON form (same shape as the gateway's frames)
  raw         bytea       NOT NULL,  -- the message value exactly as consumed (serialized protobuf)
  archived_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition, "offset")
);

-- The replay queries: a user's events in a time range, one run in order, a thread in time.
CREATE INDEX agent_events_user_time ON agent_events (user_id, emitted_at);
CREATE INDEX agent_events_run_seq ON agent_events (run_id, run_seq);
CREATE INDEX agent_events_thread_time ON agent_events (thread_id, emitted_at);
