-- Fenced append of events to a run's stream.
--
-- KEYS[1]  the run's event stream
-- KEYS[2]  the run's meta hash (field `seq` is the position of the last event)
-- KEYS[3]  the run's inbox (events sent to it)
-- KEYS[4]  an inbox to notify, the parent run's (KEYS[3] again when none)
-- KEYS[5]  the notified run's meta hash (KEYS[2] again when none)
-- KEYS[6]  the run's set of ids of the sends its inbox took
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
--            expire_ms      the batch ends the run: its stream, meta, inbox and
--                           sends expire in this many milliseconds (retention)
-- ARGV[3]  the payload of that entry ('' when none): kept out of the
--          options because Lua's cmsgpack cannot read msgpack `bin` values
-- ARGV[4..] the encoded events, in order
--
-- Returns {code, position, cancel_requested, notified_waits}: code 1 =
-- appended, 0 = the log is not at the expected position, 2 = the inbox
-- changed, 3 = the run's event limit is reached (on 0, 2 and 3 nothing is
-- written); notified_waits is 1 when the notified run is suspended waiting
-- for exactly this entry. A notified run that no longer exists (its keys
-- expired) gets nothing; one that has ended gets an inbox entry that
-- expires with it.
local position = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
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
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  position = position + 1
end
redis.call('HSET', KEYS[2], 'seq', position)
if opts.now then
  redis.call('HSET', KEYS[2], 'updated_at', opts.now)
end
if opts.meta then
  for field, value in pairs(opts.meta) do
    redis.call('HSET', KEYS[2], field, value)
  end
end
if opts.status then
  redis.call('HSET', KEYS[2], 'status', opts.status)
  if opts.channel then
    redis.call('PUBLISH', opts.channel, opts.status)
  end
end
if opts.expire_ms then
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[6]}) do
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
local cancel = redis.call('HGET', KEYS[2], 'cancel_requested')
return {1, position, cancel and 1 or 0, notified_waits}
