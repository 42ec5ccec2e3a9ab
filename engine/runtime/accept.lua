-- Store one received event, queue it behind earlier events of its lead/opportunity, and enqueue
-- an RQ job when that entity had nothing waiting: atomically, in one round trip.
-- This is the receiver's hot path, so it is lean on both ends: each redis.call costs ~5 µs
-- inside Lua on Redis 6.2, and each argument ~1 µs to pack in Python. What never changes in a
-- process (RQ's job fields, the retention) is written into the source by EventStore, as Lua
-- literals, in place of the dollar-brace placeholders.
-- KEYS: 1 event hash, 2 last-event key of its entity (dedup), 3 events index, 4 RQ job hash,
--       5 RQ queue, 6 the entity's queue of events, 7 index of non-empty entity queues
-- ARGV: 1 event id, 2 "type|fingerprint" ('' = no dedup), 3 received score (µs),
--       4 '1' when fed from the journal (may already be stored), 5 '1' to enqueue ('' = quarantined),
--       6 type, 7 received_at, 8 status, 9 body, 10 application id, 11 entity id, 12 reason
--       (the last three '' when absent)
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  -- a journal entry fed twice, or a crash between this script and the journal's delete
  return {'exists', ARGV[1]}
end
local signature = ARGV[2]
if signature ~= '' then
  local previous = redis.call('GET', KEYS[2])
  if previous then
    local cut = string.find(previous, '#', 1, true)
    if cut and string.sub(previous, 1, cut - 1) == signature then
      local first = string.sub(previous, cut + 1)
      redis.call('HINCRBY', ${event_key_prefix} .. first, 'duplicates', 1)
      return {'duplicate', first}
    end
  end
  redis.call('SET', KEYS[2], signature .. '#' .. ARGV[1], 'EX', ${duplicate_window})
end
local event = {'type', ARGV[6], 'received_at', ARGV[7], 'status', ARGV[8], 'body', ARGV[9]}
local optional = {[10] = 'application_id', [11] = 'entity_id', [12] = 'reason'}
for index = 10, 12 do
  if ARGV[index] ~= '' then
    event[#event + 1] = optional[index]
    event[#event + 1] = ARGV[index]
  end
end
redis.call('HSET', KEYS[1], unpack(event))
redis.call('EXPIRE', KEYS[1], ${retention})
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if ARGV[5] == '1' and redis.call('RPUSH', KEYS[6], ARGV[1]) == 1 then
  -- The entity had nothing waiting: this job drains it. Otherwise the worker draining it
  -- now will reach this event in order. The job's one argument is the event id; RQ reads
  -- its data uncompressed as well as compressed.
  redis.call('HSET', KEYS[4], 'data', ${data_prefix} .. ARGV[1] .. ${data_suffix},
    'created_at', ARGV[7], 'enqueued_at', ARGV[7], ${job_fields})
  redis.call('RPUSH', KEYS[5], ${job_id_prefix} .. ARGV[1])
  redis.call('ZADD', KEYS[7], ARGV[3], KEYS[6])
end
return {'accepted', ARGV[1]}
