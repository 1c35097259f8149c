-- Tidy up after a run's final event, in the same round trip as its append.
--
-- Sent right after append.lua in one pipeline; runs only if that append
-- ended the run (the meta's position is the final event's), so a refused
-- final append (another execution moved the run on) leaves the run's timers
-- and records alone.
--
-- KEYS[1]  the run's meta hash
-- KEYS[2]  the timers sorted set
-- KEYS[3]  the run's set of ids of the sends its inbox took (deleted)
-- KEYS[4]  the set of runs of the worker whose execution ended it (or KEYS[1]
--          again when none)
-- KEYS[5]  the global stream of activities
-- KEYS[6]  the run's dispatched steps (read: those still out get revoked)
-- ARGV[1]  the position of the final event
-- ARGV[2]  the run's id, taken off KEYS[4] ('' for no worker)
-- ARGV[3]  the encoded activity to add to KEYS[5] ('' for none)
-- ARGV[4]  the approximate length to trim KEYS[5] to ('' for no trimming)
-- ARGV[5..] the members of the run's timers to remove
--
-- Returns false when the run is not at ARGV[1] (nothing done), else the
-- fields and values of KEYS[6] (flat).
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then
  return false
end
if #ARGV >= 5 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 5))
end
redis.call('DEL', KEYS[3])
if ARGV[2] ~= '' then
  redis.call('SREM', KEYS[4], ARGV[2])
end
if ARGV[3] ~= '' then
  if ARGV[4] ~= '' then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3])
  else
    redis.call('XADD', KEYS[5], '*', 'e', ARGV[3])
  end
end
return redis.call('HGETALL', KEYS[6])
