-- A run ends with its FIRST terminal event in log order (docs/runs.md), no longer with the
-- terminal of the highest run_seq: a supervisor's agent_failed{worker_lost} and a zombie
-- worker's later agent_completed can both be in the log, and the first one is the end the user
-- saw. A run's events are all in its user's partition, so the Kafka offset orders them.
--
-- terminal_offset  offset of the first terminal event (terminal_seq is now its run_seq).
-- late_events      events of the run after that terminal (a zombie's, a second end): counted,
--                  they change nothing else in the row nor in tool_calls.
-- late_offset      the highest offset counted in late_events, so that re-reading the same
--                  records (a replay, a batch retried after a crash) does not count them twice.
--
-- Runs that ended before this migration have terminal_seq but no terminal_offset: they keep
-- their status and end, and their late events are not counted (rebuild analytics to get them:
-- docs/operations.md, "Recovery recipes").
--
-- 'cancelled': agent_failed with error_code "cancelled" (the user pressed Stop).
ALTER TABLE agent_runs
  ADD COLUMN terminal_offset bigint,
  ADD COLUMN late_events     bigint NOT NULL DEFAULT 0,
  ADD COLUMN late_offset     bigint;

ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_status_check;
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_status_check
  CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'abandoned'));
