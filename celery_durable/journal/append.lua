-- Fenced append of one or more events to a run's stream.
--
-- KEYS[1]  the run's event stream
-- KEYS[2]  the run's meta hash (field `seq` is the position of the last event)
-- ARGV[1]  the position the writer expects the log to be at
-- ARGV[2]  the run's status after these events ('' keeps it)
-- ARGV[3]  the time of the write, stored as meta `updated_at`
-- ARGV[4]  a channel to publish the new status on ('' publishes nothing)
-- ARGV[5]  how many meta field/value pairs follow before the events
-- ARGV[6..] those pairs, then the encoded events, in order
--
-- Returns {1, new position} on success, {0, actual position} on a conflict;
-- on a conflict nothing is written.
local position = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if position ~= tonumber(ARGV[1]) then
  return {0, position}
end
local pairs_count = tonumber(ARGV[5])
local first_event = 6 + 2 * pairs_count
for i = first_event, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  position = position + 1
end
redis.call('HSET', KEYS[2], 'seq', position, 'updated_at', ARGV[3])
for i = 6, first_event - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'status', ARGV[2])
  if ARGV[4] ~= '' then
    redis.call('PUBLISH', ARGV[4], ARGV[2])
  end
end
return {1, position}
