-- Move a claimed `schedule:<name>` timer to the schedule's next tick, or
-- remove it, unless someone set it since the claim (schedule() redefined it,
-- resume_schedule() re-added it, another claim leased it again).
--
-- KEYS[1]  the timers sorted set
-- ARGV[1]  the member
-- ARGV[2]  its leased score, as the claim read it
-- ARGV[3]  the new score (seconds), or '' to remove it
--
-- Returns 1 when moved or removed, 0 when left alone.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
