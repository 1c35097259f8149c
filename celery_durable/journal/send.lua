-- Put an event into a run's inbox unless the run is unknown or finished.
--
-- KEYS[1]  the run's meta hash
-- KEYS[2]  the run's inbox
-- KEYS[3]  the ids of the sends the inbox took
-- ARGV[1]  the event's name
-- ARGV[2]  its msgpack payload
-- ARGV[3]  this send's unique id: a send the client repeats (its reply was
--          lost, say in a Redis restart) finds its id and writes nothing again
--
-- Returns {status, waiting_for, fresh}: status is '' for an unknown run; for a
-- finished run nothing is written. `waiting_for` says which event name the
-- run is suspended on, so the sender knows whether to wake it. `fresh` is 1
-- when this send id was new (the event went into the inbox), 0 for a repeat.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'', '', 0}
end
if status == 'completed' or status == 'failed' or status == 'cancelled' or status == 'timed_out' then
  return {status, '', 0}
end
local fresh = redis.call('SADD', KEYS[3], ARGV[3])
if fresh == 1 then
  redis.call('XADD', KEYS[2], '*', 'n', ARGV[1], 'p', ARGV[2])
end
return {status, redis.call('HGET', KEYS[1], 'waiting_for') or '', fresh}
