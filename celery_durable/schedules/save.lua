-- Store a schedule's definition, keeping its state when nothing changed.
--
-- KEYS[1]  the schedule's hash
-- ARGV[1]  'runtime' (replace whatever is stored) or 'decorator' (leave a
--          schedule made by schedule() alone: it owns the name)
-- ARGV[2]  the definition's digest
-- ARGV[3]  the next tick (ms) of this definition from now, '' if none
-- ARGV[4]  now (seconds), for created_at / updated_at
-- ARGV[5..] field, value, field, value, ... of the definition
--
-- Returns {outcome, next_tick, paused}: outcome is 'created', 'updated',
-- 'unchanged' (same digest: state and next tick kept, so a worker restart
-- neither skips nor repeats a tick) or 'taken'; next_tick and paused as
-- stored afterwards.
local source = redis.call('HGET', KEYS[1], 'source')
local paused = redis.call('HGET', KEYS[1], 'paused') or '0'
if ARGV[1] == 'decorator' and source and source ~= 'decorator' then
  return {'taken', redis.call('HGET', KEYS[1], 'next_tick') or '', paused}
end
if source and redis.call('HGET', KEYS[1], 'digest') == ARGV[2] then
  return {'unchanged', redis.call('HGET', KEYS[1], 'next_tick') or '', paused}
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'digest', ARGV[2], 'next_tick', ARGV[3], 'updated_at', ARGV[4])
if not source then
  redis.call('HSET', KEYS[1], 'created_at', ARGV[4], 'paused', '0')
  return {'created', ARGV[3], '0'}
end
return {'updated', ARGV[3], paused}
