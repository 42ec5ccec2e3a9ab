-- Store one received event, queue it behind earlier events of its lead/opportunity, and enqueue
-- an RQ job when that entity had nothing waiting: atomically, in one round trip.
-- Each redis.call costs ~5 µs inside Lua on Redis 6.2, so this script does only what must be atomic.
-- KEYS: 1 event hash, 2 last-event key of its entity (dedup), 3 events index, 4 RQ job hash,
--       5 RQ queue, 6 the entity's queue of events, 7 index of non-empty entity queues
-- ARGV: 1 event id, 2 "type|fingerprint" ('' = no dedup), 3 dedup window seconds,
--       4 retention seconds, 5 received score (µs), 6 job id ('' = quarantined: nothing to run),
--       7 event key prefix, 8 '1' when fed from the journal (may already be stored),
--       9 number of event fields n, then n field/value pairs of the event, then the job's pairs
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
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
      redis.call('HINCRBY', ARGV[7] .. first, 'duplicates', 1)
      return {'duplicate', first}
    end
  end
  redis.call('SET', KEYS[2], signature .. '#' .. ARGV[1], 'EX', tonumber(ARGV[3]))
end
local last_event_arg = 9 + 2 * tonumber(ARGV[9])
redis.call('HSET', KEYS[1], unpack(ARGV, 10, last_event_arg))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], tonumber(ARGV[5]), ARGV[1])
if ARGV[6] ~= '' and redis.call('RPUSH', KEYS[6], ARGV[1]) == 1 then
  -- The entity had nothing waiting: this job drains it. Otherwise the worker draining it
  -- now will reach this event in order.
  redis.call('HSET', KEYS[4], unpack(ARGV, last_event_arg + 1, #ARGV))
  redis.call('RPUSH', KEYS[5], ARGV[6])
  redis.call('ZADD', KEYS[7], tonumber(ARGV[5]), KEYS[6])
end
return {'accepted', ARGV[1]}
