-- Fenced append of events to a run's stream.
--
-- KEYS[1]  the run's event stream
-- KEYS[2]  the run's meta hash (field `seq` is the position of the last event)
-- KEYS[3]  the run's inbox (events sent to it)
-- KEYS[4]  an inbox to notify, the parent run's (KEYS[3] again when none)
-- KEYS[5]  the notified run's meta hash (KEYS[2] again when none)
-- KEYS[6]  the run's set of ids of the sends its inbox took
-- KEYS[7]  the run's dispatched steps (hash; fields `<f>:<position>`, see
--          journal/steps.py): d stream id of its step.dispatched, t the task
--          id of the message that may run it, a its attempt, r who runs it,
--          f its failed attempts, o its outcome ('' once the journal has it),
--          w set while the run waits for it; `waiting` counts the w fields
-- ARGV[1]  the position the writer expects the log to be at
-- ARGV[2]  msgpack map of options, all optional:
--            now            time of the write, stored as meta `updated_at`
--            status         the run's status after these events
--            channel        where to publish the new status
--            meta           map of extra meta fields to set
--            inbox_len      refuse (code 2) unless the run's inbox has this length
--            notify_name    name of an entry to add to KEYS[4], with ARGV[3]
--            max_events     refuse (code 3) if the log would hold more events
--                           than this (not given for a batch that ends the run)
--            expire_ms      the batch ends the run: its stream, meta, inbox,
--                           sends and steps expire in this many milliseconds
--            dispatch       list of {index, position, task_id}: event `index`
--                           (1 for ARGV[4]) is the step.dispatched of that
--                           position; its record starts anew from it
--            await          positions the run suspends waiting for: refuse
--                           (code 4) if every one of them has an outcome
--                           already; else mark those without one (w) and set
--                           `waiting` to their number
--            consume        positions whose outcomes these events record: each
--                           record shrinks to o = '' (a late delivery of its
--                           message finds the step done)
--            steps_set      map of fields to set on KEYS[7] (the run's context
--                           for its steps' bodies)
--            file           add this member (the run's id) to KEYS[8], the
--                           set of runs of the worker whose execution claims
--                           the run (given only where keys may be in other
--                           slots: not on Redis Cluster)
-- ARGV[3]  the payload of that entry ('' when none): kept out of the
--          options because Lua's cmsgpack cannot read msgpack `bin` values
-- ARGV[4..] the encoded events, in order
--
-- Returns {code, position, cancel_requested, notified_waits}: code 1 =
-- appended, 0 = the log is not at the expected position, 2 = the inbox
-- changed, 3 = the run's event limit is reached, 4 = the steps awaited have
-- all finished (on 0, 2, 3 and 4 nothing is written); notified_waits is 1 when the notified run is suspended waiting
-- for exactly this entry. A notified run that no longer exists (its keys
-- expired) gets nothing; one that has ended gets an inbox entry that
-- expires with it.
-- The run's cancel request is read here too (below, only opts.meta may set it).
local head = redis.call('HMGET', KEYS[2], 'seq', 'cancel_requested')
local position = tonumber(head[1] or '0')
if position ~= tonumber(ARGV[1]) then
  return {0, position, 0, 0}
end
local opts = cmsgpack.unpack(ARGV[2])
if opts.inbox_len and redis.call('XLEN', KEYS[3]) ~= opts.inbox_len then
  return {2, position, 0, 0}
end
if opts.max_events and position + (#ARGV - 3) > opts.max_events then
  return {3, position, 0, 0}
end
local dispatching = {}
if opts.dispatch then
  for _, d in ipairs(opts.dispatch) do
    dispatching[d[1]] = d
  end
end
if opts.await then
  local fresh = {}
  for _, d in pairs(dispatching) do
    fresh[tostring(d[2])] = true
  end
  local missing = {}
  for _, p in ipairs(opts.await) do
    local outcome = redis.call('HGET', KEYS[7], 'o:' .. p)
    if fresh[tostring(p)] or not outcome or outcome == '' then
      missing[#missing + 1] = p
    end
  end
  if #missing == 0 then
    return {4, position, 0, 0}
  end
  opts.await = missing
end
for i = 4, #ARGV do
  local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  position = position + 1
  local d = dispatching[i - 3]
  if d then
    local p = d[2]
    redis.call('HDEL', KEYS[7], 'o:' .. p, 'r:' .. p, 'f:' .. p, 'w:' .. p)
    redis.call('HSET', KEYS[7], 'd:' .. p, id, 't:' .. p, d[3], 'a:' .. p, 1)
  end
end
if opts.consume then
  for _, p in ipairs(opts.consume) do
    redis.call('HSET', KEYS[7], 'o:' .. p, '')
    if redis.call('HDEL', KEYS[7], 'w:' .. p) == 1 then
      redis.call('HINCRBY', KEYS[7], 'waiting', -1)
    end
    redis.call('HDEL', KEYS[7], 'd:' .. p, 't:' .. p, 'a:' .. p, 'r:' .. p, 'f:' .. p)
  end
end
if opts.await then
  for _, p in ipairs(opts.await) do
    redis.call('HSET', KEYS[7], 'w:' .. p, 1)
  end
  redis.call('HSET', KEYS[7], 'waiting', #opts.await)
end
if opts.steps_set then
  for field, value in pairs(opts.steps_set) do
    redis.call('HSET', KEYS[7], field, value)
  end
end
if opts.file then
  redis.call('SADD', KEYS[8], opts.file)
end
-- The meta's fields in one HSET: a step's append is this script's hot path.
local set = {'seq', position}
if opts.now then
  set[#set + 1] = 'updated_at'
  set[#set + 1] = opts.now
end
if opts.meta then
  for field, value in pairs(opts.meta) do
    set[#set + 1] = field
    set[#set + 1] = value
  end
end
if opts.status then
  set[#set + 1] = 'status'
  set[#set + 1] = opts.status
end
redis.call('HSET', KEYS[2], unpack(set))
if opts.status then
  if opts.channel then
    redis.call('PUBLISH', opts.channel, opts.status)
  end
end
if opts.expire_ms then
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[6], KEYS[7]}) do
    redis.call('PEXPIRE', key, opts.expire_ms)
  end
end
local notified_waits = 0
local notified_ttl = opts.notify_name and redis.call('PTTL', KEYS[5])
if notified_ttl and notified_ttl ~= -2 then
  redis.call('XADD', KEYS[4], '*', 'n', opts.notify_name, 'p', ARGV[3])
  if notified_ttl > 0 then
    redis.call('PEXPIRE', KEYS[4], notified_ttl)
  end
  local waiting = redis.call('HMGET', KEYS[5], 'status', 'waiting_for')
  if waiting[1] == 'waiting' and waiting[2] == opts.notify_name then
    notified_waits = 1
  end
end
local cancel = head[2] or (opts.meta and opts.meta.cancel_requested)
return {1, position, cancel and 1 or 0, notified_waits}
