-- The gateway reads the archive as the log's cold tier (docs/architecture.md, "History past
-- retention"): a user's events of one partition in offset order, from a cursor on, and a
-- thread's events before or after a cursor. Both are a range of this index: the user's rows of
-- the partition ordered by offset (a thread's are filtered from them; a user's partition holds
-- all of the user's threads).
CREATE INDEX agent_events_user_offset ON agent_events (user_id, topic, partition, "offset");
