-- Record a new run all at once: its first event, its meta, its index entry and
-- the timer that sends it again should its message never reach a worker.
--
-- Either all of it is written or nothing is: Redis refuses a script at its
-- first write when it is out of memory, and runs the rest once that passed.
-- A run is so never left `pending` without the timer that dispatches it, nor
-- without its index entry.
--
-- KEYS[1]  the run's event stream
-- KEYS[2]  the run's meta hash (field `seq` is the position of the last event)
-- KEYS[3]  the index of runs (a sorted set by creation time)
-- KEYS[4]  the timers sorted set
-- ARGV[1]  msgpack map of meta fields to set (`seq`, `status`, `updated_at`
--          and the caller's: name, created_at, parent, ...)
-- ARGV[2]  the run's id, its member in the index
-- ARGV[3]  its score in the index (its creation time)
-- ARGV[4]  the timer's member ('' for no timer)
-- ARGV[5]  the timer's due time
-- ARGV[6]  the encoded `workflow.started` event
--
-- Returns {code, position}: code 1 = recorded; 0 = the run exists already
-- (its meta has a position), nothing written; 2 = it exists, and its only
-- event is this very one (the call sent again after a lost reply: ours).
local position = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if position ~= 0 then
  if position == 1 then
    local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
    if last and last[2][1] == 'e' and last[2][2] == ARGV[6] then
      return {2, position}
    end
  end
  return {0, position}
end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[6])
local fields = cmsgpack.unpack(ARGV[1])
for field, value in pairs(fields) do
  redis.call('HSET', KEYS[2], field, value)
end
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
end
return {1, 1}
