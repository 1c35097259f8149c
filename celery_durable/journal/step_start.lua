-- A delivery of a dispatched step's message asks to run the step's body.
--
-- KEYS[1]  the run's dispatched steps (hash, see append.lua and steps.py)
-- KEYS[2]  the run's meta hash
-- KEYS[3]  the run's event stream
-- ARGV[1]  the step's position
-- ARGV[2]  the task id of this delivery's message
-- ARGV[3]  who asks: `hostname/pid`
-- ARGV[4]  now (wall-clock seconds), kept with the runner
--
-- Only the message the record names (t) may run the step, and only one
-- delivery of it at a time: a duplicate, a late redelivery, a message
-- replaced by a re-send or a retry, a step of an ended run all get a verdict
-- other than 'run' and write nothing.
--
-- Returns {verdict, ...}:
--   {'run', event, attempt, failures, dispatch_id, idempotency_key, name, created_at}
--        the body is to run: `event` is the encoded step.dispatched (its
--        arguments), `failures` the encoded failed attempts so far ('' none)
--   {'gone'}     no such run (expired), or its dispatch is not in the stream
--   {'ended'}    the run has ended
--   {'done'}     the step has an outcome already
--   {'stale'}    the step now waits for another message
--   {'busy', runner}   another delivery runs it (`hostname/pid|since`)
local p = ARGV[1]
local status = redis.call('HGET', KEYS[2], 'status')
if not status then
  return {'gone'}
end
if status == 'completed' or status == 'failed' or status == 'cancelled' or status == 'timed_out' then
  return {'ended'}
end
if redis.call('HEXISTS', KEYS[1], 'o:' .. p) == 1 then
  return {'done'}
end
if redis.call('HGET', KEYS[1], 't:' .. p) ~= ARGV[2] then
  return {'stale'}
end
local runner = redis.call('HGET', KEYS[1], 'r:' .. p)
if runner and string.sub(runner, 1, #ARGV[3] + 1) ~= ARGV[3] .. '|' then
  return {'busy', runner}
end
local id = redis.call('HGET', KEYS[1], 'd:' .. p)
local entry = id and redis.call('XRANGE', KEYS[3], id, id)
if not entry or #entry == 0 then
  return {'gone'}
end
redis.call('HSET', KEYS[1], 'r:' .. p, ARGV[3] .. '|' .. ARGV[4])
local fields = entry[1][2]
local event = ''
for i = 1, #fields, 2 do
  if fields[i] == 'e' then
    event = fields[i + 1]
  end
end
local meta = redis.call('HMGET', KEYS[2], 'name', 'created_at')
return {
  'run',
  event,
  redis.call('HGET', KEYS[1], 'a:' .. p) or '1',
  redis.call('HGET', KEYS[1], 'f:' .. p) or '',
  id,
  redis.call('HGET', KEYS[1], 'ctx:key') or '',
  meta[1] or '',
  meta[2] or '',
}
