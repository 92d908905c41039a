-- Messages the archive could not turn into an agent_events row (not protobuf, missing user_id,
-- run_id or body, key different from user_id, ...). Kept with the raw bytes so they can be
-- inspected and, once fixed upstream, re-driven. The same message also goes to <topic>.dlq.
CREATE TABLE dead_letters (
  topic       text        NOT NULL,
  partition   integer     NOT NULL,
  "offset"    bigint      NOT NULL,
  group_id    text        NOT NULL,
  reason      text        NOT NULL,
  key         bytea,
  raw         bytea,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition, "offset")
);

CREATE INDEX dead_letters_received ON dead_letters (received_at);
