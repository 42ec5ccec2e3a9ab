-- Store one received event, queue it behind earlier events of its lead/opportunity, and enqueue
-- an RQ job when that entity had nothing waiting: atomically, in one round trip.
-- This is the receiver's hot path, so it is lean on both ends: each redis.call costs ~4 µs
-- inside Lua on Redis 6.2, and each argument ~0.3 µs to pack in Python and again to read here.
-- What never changes in a process (key prefixes, RQ's job fields) is written into
-- the source by EventStore, as Lua literals, in place of the dollar-brace placeholders; the keys
-- of one event are composed here from its id and its entity. (Not for Redis Cluster: the keys of
-- one event live in different slots anyway.)
-- ARGV: 1 event id, 2 its entity key, 3 "type|fingerprint" ('' = no dedup), 4 received score (µs),
--       5 '1' when fed from the journal (may already be stored), 6 type, 7 received_at, 8 body,
--       9 application id, 10 entity id, 11 quarantine reason ('' = none: the event is processed)
--       (9 to 11 are '' when absent)
local id, entity = ARGV[1], ARGV[2]
local event_key = ${event_key_prefix} .. id
if ARGV[5] == '1' and redis.call('EXISTS', event_key) == 1 then
  -- a journal entry fed twice, or a crash between this script and the journal's delete
  return {'exists', id}
end
local signature = ARGV[3]
if signature ~= '' then
  local last_key = ${last_event_prefix} .. entity
  local previous = redis.call('GET', last_key)
  if previous then
    local cut = string.find(previous, '#', 1, true)
    if cut and string.sub(previous, 1, cut - 1) == signature then
      local first = string.sub(previous, cut + 1)
      if redis.call('EXISTS', ${event_key_prefix} .. first) == 1 then  -- it may be trimmed already
        redis.call('HINCRBY', ${event_key_prefix} .. first, 'duplicates', 1)
      end
      return {'duplicate', first}
    end
  end
  redis.call('SET', last_key, signature .. '#' .. id, 'EX', ${duplicate_window})
end
local reason = ARGV[11]
local event = {'type', ARGV[6], 'received_at', ARGV[7], 'body', ARGV[8],
               'status', reason == '' and ${received} or ${quarantined}}
local optional = {[9] = 'application_id', [10] = 'entity_id', [11] = 'reason'}
for index = 9, 11 do
  if ARGV[index] ~= '' then
    event[#event + 1] = optional[index]
    event[#event + 1] = ARGV[index]
  end
end
redis.call('HSET', event_key, unpack(event))
-- No expiry: an event is removed by retention only once it is finished (retention.py).
redis.call('ZADD', ${events_index}, ARGV[4], id)
if reason ~= '' then
  -- Quarantined: no rule will run, so it is finished now (scored in milliseconds, as retention reads it).
  redis.call('ZADD', ${finished_index}, math.floor(tonumber(ARGV[4]) / 1000), id)
  return {'accepted', id}
end
local queue_key = ${entity_queue_prefix} .. entity
local waiting
if ARGV[5] == '1' then
  -- Fed from a journal (this machine lost Redis meanwhile, another may not have): the event takes
  -- its place among its entity's waiting events by receive time, which ids sort by, not the tail.
  -- Never before a head being processed right now: that one is committed first.
  local queued = redis.call('LRANGE', queue_key, 0, -1)
  local after = nil
  for index = #queued, 1, -1 do
    if queued[index] < id then
      break
    end
    if index > 1 or redis.call('EXISTS', ${lock_prefix} .. entity) == 0 then
      after = queued[index]
    end
  end
  if after then
    waiting = redis.call('LINSERT', queue_key, 'BEFORE', after, id)
  else
    waiting = redis.call('RPUSH', queue_key, id)
  end
else
  waiting = redis.call('RPUSH', queue_key, id)
end
if waiting == 1 then
  -- The entity had nothing waiting: this job drains it. Otherwise the worker draining it
  -- now will reach this event in order. The job's one argument is the event id; RQ reads
  -- its data uncompressed as well as compressed.
  redis.call('HSET', ${job_key_prefix} .. id, 'data', ${data_prefix} .. id .. ${data_suffix},
    'created_at', ARGV[7], 'enqueued_at', ARGV[7], ${job_fields})
  redis.call('RPUSH', ${rq_queue}, ${job_id_prefix} .. id)
  redis.call('ZADD', ${waiting_queues}, ARGV[4], queue_key)
end
return {'accepted', id}
