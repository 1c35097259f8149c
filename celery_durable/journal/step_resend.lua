-- Hand a dispatched step to a new message: its delivery died with its worker
-- or pool process, or its message was lost or never sent.
--
-- KEYS[1]  the run's dispatched steps (hash, see append.lua and steps.py)
-- KEYS[2]  the run's meta hash
-- KEYS[3]  the run's event stream
-- ARGV[1]  the step's position
-- ARGV[2]  the task id the record must still name (the lost message's)
-- ARGV[3]  the runner the record must still name ('' for none: not started),
--          without its `|since`; '*' for any
-- ARGV[4]  the new message's task id ('' to keep the task id: the same
--          message is sent again, as nothing took it)
--
-- Compare-and-set: when the step has no outcome and the record still names
-- that message and runner, the new task id replaces the old (a late
-- delivery of the old message is then 'stale' at its start) and the runner
-- is cleared. Returns {1, event} (the encoded step.dispatched: what to send)
-- when the step is to be sent, else {0, ''}.
local p = ARGV[1]
local status = redis.call('HGET', KEYS[2], 'status')
if not status or status == 'completed' or status == 'failed' or status == 'cancelled'
    or status == 'timed_out' then
  return {0, ''}
end
if redis.call('HEXISTS', KEYS[1], 'o:' .. p) == 1 then
  return {0, ''}
end
if redis.call('HGET', KEYS[1], 't:' .. p) ~= ARGV[2] then
  return {0, ''}
end
local runner = redis.call('HGET', KEYS[1], 'r:' .. p)
local who = runner and string.match(runner, '^(.*)|[^|]*$') or ''
if ARGV[3] ~= '*' and who ~= ARGV[3] then
  return {0, ''}
end
local id = redis.call('HGET', KEYS[1], 'd:' .. p)
local entry = id and redis.call('XRANGE', KEYS[3], id, id)
if not entry or #entry == 0 then
  return {0, ''}
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 't:' .. p, ARGV[4])
end
redis.call('HDEL', KEYS[1], 'r:' .. p)
local fields = entry[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'e' then
    return {1, fields[i + 1]}
  end
end
return {0, ''}
