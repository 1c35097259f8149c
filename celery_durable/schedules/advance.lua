-- Record what firing did and move the schedule to its next tick, if it is
-- still at the tick this firing read.
--
-- KEYS[1]  the schedule's hash
-- KEYS[2]  the schedule's history (list, newest first)
-- ARGV[1]  the next tick as read before firing (the fence)
-- ARGV[2]  the new next tick (ms), '' once the schedule has ended
-- ARGV[3]  how many history entries to keep
-- ARGV[4]  n, then n field/value pairs to set
-- then     m, then m counter/increment pairs
-- then     history entries (msgpack), oldest first
--
-- Returns 1, or 0 and writes nothing when the schedule was deleted,
-- redefined or resumed meanwhile, or another firing of the same tick (a
-- lease that ran out) got there first.
if redis.call('HGET', KEYS[1], 'next_tick') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'next_tick', ARGV[2])
local i = 5
local n = tonumber(ARGV[4])
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if i <= #ARGV then
  for j = i, #ARGV do
    redis.call('LPUSH', KEYS[2], ARGV[j])
  end
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
end
return 1
