-- Release claimed timers whose run was dispatched, unless rescheduled since:
-- remove each, or move it to a later time to look at the run again then.
--
-- KEYS[1]  the timers sorted set
-- ARGV     member, leased score, next score, member, leased score, next score, ...
--          (next score '' removes the member)
--
-- A member whose score changed was set again (the run suspended anew before
-- this release ran) and stays as it is. Returns how many were removed or moved.
local released = 0
for i = 1, #ARGV, 3 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    if ARGV[i + 2] == '' then
      redis.call('ZREM', KEYS[1], ARGV[i])
    else
      redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i])
    end
    released = released + 1
  end
end
return released
