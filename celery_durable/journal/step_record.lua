-- Record what a delivery of a dispatched step came to: its outcome, or a
-- failed attempt to be retried.
--
-- KEYS[1]  the run's dispatched steps (hash, see append.lua and steps.py)
-- KEYS[2]  the run's meta hash
-- ARGV[1]  the step's position
-- ARGV[2]  the stream id of the step.dispatched this delivery ran (a step
--          dispatched anew, by a new attempt of the workflow, takes no
--          outcome of the old dispatch)
-- ARGV[3]  'outcome' or 'retry'
-- ARGV[4]  outcome: the encoded outcome; retry: the encoded failed attempts so far
-- ARGV[5]  retry: the task id of the message of the next attempt ('' when
--          the same delivery goes on after a short wait)
-- ARGV[6]  retry: the next attempt's number
-- ARGV[7]  retry: the task id of this delivery (only the current message retries)
--
-- An outcome is recorded once: the first one wins, later ones (a duplicate
-- delivery, a delivery thought dead) write nothing. The outcome that
-- completes what the run waits for (the last `w` field) says so, and only
-- while the run is suspended waiting: the run is woken once per wait.
--
-- Returns {recorded, wake, status}: recorded 1 if written; wake 1 for the
-- outcome that completed the run's wait; status the run's status ('' gone).
local p = ARGV[1]
local status = redis.call('HGET', KEYS[2], 'status') or ''
if status == '' or redis.call('HEXISTS', KEYS[1], 'o:' .. p) == 1 then
  return {0, 0, status}
end
if redis.call('HGET', KEYS[1], 'd:' .. p) ~= ARGV[2] then
  return {0, 0, status}
end
if ARGV[3] == 'retry' then
  if redis.call('HGET', KEYS[1], 't:' .. p) ~= ARGV[7] then
    return {0, 0, status}
  end
  redis.call('HSET', KEYS[1], 'a:' .. p, ARGV[6], 'f:' .. p, ARGV[4])
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 't:' .. p, ARGV[5])
    redis.call('HDEL', KEYS[1], 'r:' .. p)
  end
  return {1, 0, status}
end
redis.call('HSET', KEYS[1], 'o:' .. p, ARGV[4])
redis.call('HDEL', KEYS[1], 'r:' .. p, 'f:' .. p)
local wake = 0
if redis.call('HDEL', KEYS[1], 'w:' .. p) == 1 then
  local left = redis.call('HINCRBY', KEYS[1], 'waiting', -1)
  if left <= 0 and status == 'waiting' then
    wake = 1
  end
end
return {1, wake, status}
