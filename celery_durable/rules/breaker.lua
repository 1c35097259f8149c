-- A rule's circuit breaker over a rolling window.
--
-- KEYS[1]  the sorted set of the rule's executions (scored by time)
-- KEYS[2]  the flag set while the breaker is open
-- ARGV[1]  now (seconds)   ARGV[2] window (seconds)   ARGV[3] max executions
-- ARGV[4]  a unique member for this execution
-- ARGV[5]  1 to record the execution when closed, 0 to only look (dry run)
--
-- Returns {closed (1/0), executions in the window, closes_at, just_opened (1/0)}
-- as strings.
local now, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= max then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local closes_at = tonumber(oldest[2]) + window
  local just_opened = 0
  if ARGV[5] == '1' then
    local ttl = math.max(1, math.ceil((closes_at - now) * 1000))
    if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ttl) then
      just_opened = 1
    end
  end
  return {'0', tostring(count), tostring(closes_at), tostring(just_opened)}
end
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 60)
  count = count + 1
end
return {'1', tostring(count), '0', '0'}
