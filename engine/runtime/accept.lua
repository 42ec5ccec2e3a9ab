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
local fed = ARGV[5] == '1'
if fed and redis.call('EXISTS', event_key) == 1 then
  -- a journal entry fed twice, or a crash between this script and the journal's progress
  return {'exists', id}
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

local function queue_behind_earlier(event_id, score)
  -- Append to the entity's queue (in receive time, which ids sort by, when fed late), and enqueue
  -- a job when the entity had nothing waiting: otherwise the worker draining it will reach it.
  local queue_key = ${entity_queue_prefix} .. entity
  local waiting
  if fed then
    -- Never before a head being processed right now: that one is committed first.
    local queued = redis.call('LRANGE', queue_key, 0, -1)
    local after = nil
    for index = #queued, 1, -1 do
      if queued[index] < event_id then
        break
      end
      if index > 1 or redis.call('EXISTS', ${lock_prefix} .. entity) == 0 then
        after = queued[index]
      end
    end
    if after then
      waiting = redis.call('LINSERT', queue_key, 'BEFORE', after, event_id)
    else
      waiting = redis.call('RPUSH', queue_key, event_id)
    end
  else
    waiting = redis.call('RPUSH', queue_key, event_id)
  end
  if waiting == 1 then
    -- The job's one argument is the event id; RQ reads its data uncompressed as well as compressed.
    redis.call('HSET', ${job_key_prefix} .. event_id, 'data', ${data_prefix} .. event_id .. ${data_suffix},
      'created_at', ARGV[7], 'enqueued_at', ARGV[7], ${job_fields})
    redis.call('RPUSH', ${rq_queue}, ${job_id_prefix} .. event_id)
    redis.call('ZADD', ${waiting_queues}, score, queue_key)
  end
end

-- Duplicates (Hana's retries: the same body as the entity's previous event). The memory is
-- "signature#first id[#id of its latest retry]". A retry is kept, dormant: should another
-- machine's journal show an event received between the first and the retry, the retry was a real
-- change back, and it is revived in its place. An event fed from a journal is judged against
-- what it followed when it was received, never against an event received after it.
local signature = ARGV[3]
local revive = nil
if signature ~= '' then
  local last_key = ${last_event_prefix} .. entity
  local previous = redis.call('GET', last_key)
  local seen, first, retry
  if previous then
    local cut = string.find(previous, '#', 1, true)
    if cut then
      seen, first = string.sub(previous, 1, cut - 1), string.sub(previous, cut + 1)
      local second = string.find(first, '#', 1, true)
      if second then
        first, retry = string.sub(first, 1, second - 1), string.sub(first, second + 1)
      end
    end
  end
  local first_key = first and ${event_key_prefix} .. first
  if not fed and seen == signature then
    if redis.call('EXISTS', first_key) == 1 then  -- it may be trimmed already
      redis.call('HINCRBY', first_key, 'duplicates', 1)
    end
    event[8] = ${duplicate}
    redis.call('HSET', event_key, 'duplicate_of', first, ${indexed_field}, ${duplicate_listing}, unpack(event))
    redis.call('ZADD', ${finished_index}, math.floor(tonumber(ARGV[4]) / 1000), id)
    redis.call('ZADD', ${duplicates_index}, ARGV[4], id)  -- for the overview's chart; forgotten with it
    redis.call('SET', last_key, seen .. '#' .. first .. '#' .. id, 'EX', ${duplicate_window})
    return {'duplicate', first}
  elseif not fed then
    redis.call('SET', last_key, signature .. '#' .. id, 'EX', ${duplicate_window})
  elseif first and first < id then
    if seen == signature then
      if retry and retry > id then
        -- received between the first and a retry of it: a retry too, the retry stays one
      elseif redis.call('EXISTS', first_key) == 1 then
        redis.call('HINCRBY', first_key, 'duplicates', 1)
      end
      return {'duplicate', first}
    end
    if retry and retry > id then
      revive = retry  -- this event came between the first and its "retry": a change back after all
      redis.call('SET', last_key, seen .. '#' .. retry, 'EX', ${duplicate_window})
    else
      redis.call('SET', last_key, signature .. '#' .. id, 'EX', ${duplicate_window})
    end
  end
  -- Fed, and received before what is remembered (or nothing is): accepted, the memory untouched.
end

redis.call('HSET', event_key, unpack(event))
-- No expiry: an event is removed by retention only once it is finished (retention.py).
redis.call('ZADD', ${events_index}, ARGV[4], id)
if reason ~= '' then
  -- Quarantined: no rule will run, so it is finished now (scored in milliseconds, as retention reads it).
  redis.call('ZADD', ${finished_index}, math.floor(tonumber(ARGV[4]) / 1000), id)
  return {'accepted', id}
end
queue_behind_earlier(id, ARGV[4])
if revive and redis.call('HGET', ${event_key_prefix} .. revive, 'status') == ${duplicate} then
  local score = tonumber(string.sub(revive, 1, 14), 16)
  redis.call('HSET', ${event_key_prefix} .. revive, 'status', ${received})
  redis.call('HDEL', ${event_key_prefix} .. revive, 'duplicate_of')
  redis.call('ZREM', ${finished_index}, revive)
  redis.call('ZADD', ${events_index}, score, revive)
  queue_behind_earlier(revive, score)
end
return {'accepted', id}
