-- Remove claimed timers whose run was dispatched, unless rescheduled since.
--
-- KEYS[1]  the timers sorted set
-- ARGV     member, leased score, member, leased score, ...
--
-- A member whose score changed was set again (the run suspended anew before
-- this release ran) and stays. Returns how many were removed.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
