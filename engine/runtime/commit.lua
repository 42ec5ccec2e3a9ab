-- Commit one processed event: pop it from its entity's queue, write the entity's state and the
-- event's outcome, all or nothing, and only if we still hold the entity's lock.
-- KEYS: 1 entity lock, 2 entity queue, 3 event hash, 4 entity state, 5 index of non-empty queues
-- ARGV: 1 lock token, 2 event id, 3 state change (set/del/keep), 4 state JSON, 5 lock TTL ms,
--       then the event's field/value pairs
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 'lost-lock'
end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then
  return 'not-head'
end
redis.call('LPOP', KEYS[2])
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[5], KEYS[2])
end
if ARGV[3] == 'set' then
  redis.call('SET', KEYS[4], ARGV[4])
elseif ARGV[3] == 'del' then
  redis.call('DEL', KEYS[4])
end
if #ARGV > 5 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 6, #ARGV))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return 'ok'
