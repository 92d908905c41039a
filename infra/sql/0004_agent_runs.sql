-- Per-run facts maintained by `agentwire analytics`. Every column is a merge that gives the
-- same result when an event is applied twice (earliest/latest time, highest seq, the terminal
-- event with the highest run_seq), so replays and redelivery change nothing.
CREATE TABLE agent_runs (
  run_id           text        PRIMARY KEY,
  user_id          text        NOT NULL,
  thread_id        text        NOT NULL,
  agent_name       text        NOT NULL,
  started_at       timestamptz,           -- earliest event of the run (normally agent_started)
  first_thought_at timestamptz,           -- earliest agent_thinking
  ended_at         timestamptz,           -- the terminal event's time
  status           text        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'completed', 'failed', 'abandoned')),
  terminal_seq     bigint,                -- run_seq of the terminal event that set status
  duration_ms      bigint GENERATED ALWAYS AS
                   ((extract(epoch FROM (ended_at - started_at)) * 1000)::bigint) STORED,
  time_to_first_thought_ms bigint GENERATED ALWAYS AS
                   ((extract(epoch FROM (first_thought_at - started_at)) * 1000)::bigint) STORED,
  tool_count       integer     NOT NULL DEFAULT 0,  -- recomputed from tool_calls
  tool_errors      integer     NOT NULL DEFAULT 0,
  error_code       text,
  error_message    text,
  last_seq         bigint      NOT NULL DEFAULT 0,
  last_event_at    timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX agent_runs_status_last_event ON agent_runs (status, last_event_at);
CREATE INDEX agent_runs_user_started ON agent_runs (user_id, started_at);
CREATE INDEX agent_runs_thread ON agent_runs (thread_id);
