-- One row per tool call of a run. call_key is the event's tool_call_id, or "seq:<run_seq of the
-- tool_executing event>" when the worker did not set one (the completion then pairs with the
-- earliest open call of the same tool; completed_seq records the pairing so a replay pairs the
-- same way).
CREATE TABLE tool_calls (
  run_id        text        NOT NULL,
  call_key      text        NOT NULL,
  tool_call_id  text,
  tool_name     text        NOT NULL,
  user_id       text        NOT NULL,
  start_seq     bigint,
  completed_seq bigint,
  started_at    timestamptz,
  ended_at      timestamptz,
  duration_ms   bigint,               -- as reported by tool_completed, else ended_at - started_at
  ok            boolean,              -- NULL while the call is open
  error         text,
  PRIMARY KEY (run_id, call_key)
);

CREATE INDEX tool_calls_tool_name ON tool_calls (tool_name);
