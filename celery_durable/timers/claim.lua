-- Claim due timers: each one found is leased by moving its score to
-- `now + lease`, so no other poller sees it, and so it fires again should the
-- claimer die before it dispatched the run.
--
-- KEYS[1]  the timers sorted set
-- ARGV[1]  now (clock seconds)
-- ARGV[2]  lease seconds
-- ARGV[3]  the most timers to claim
--
-- Returns {claimed, next}: claimed is a flat list (member, leased score,
-- member, leased score, ...); next is {member, score} of the earliest timer
-- left, so the poller can sleep until then, or an empty list.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
local claimed = {}
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], lease, member)
  claimed[#claimed + 1] = member
  claimed[#claimed + 1] = redis.call('ZSCORE', KEYS[1], member)
end
return {claimed, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')}
