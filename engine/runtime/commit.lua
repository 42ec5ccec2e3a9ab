-- Commit one processed event: pop it from its entity's queue, write the entity's state, the
-- event's outcome, its action records and the RQ jobs that run them, all or nothing, and only
-- if we still hold the entity's lock.
-- KEYS: 1 entity lock, 2 entity queue, 3 event hash, 4 entity state, 5 index of non-empty queues
-- ARGV: 1 lock token, 2 event id, 3 state change (set/del/keep), 4 state JSON, 5 lock TTL ms,
--       6 retention seconds, 7 n, then n event field/value pairs,
--       then r, and r records: key, m, m field/value pairs
--       then j, and j jobs: job key, job id, queue key, schedule key, at ('' = now), m, m pairs
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
local retention = tonumber(ARGV[6])
local at = 7
local n = tonumber(ARGV[at])
if n > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], unpack(ARGV, at + 1, at + 2 * n))
end
at = at + 2 * n + 1
local records = tonumber(ARGV[at])
at = at + 1
for _ = 1, records do
  local key, m = ARGV[at], tonumber(ARGV[at + 1])
  redis.call('HSET', key, unpack(ARGV, at + 2, at + 1 + 2 * m))
  redis.call('EXPIRE', key, retention)
  at = at + 2 + 2 * m
end
local jobs = tonumber(ARGV[at])
at = at + 1
for _ = 1, jobs do
  local job_key, job_id, queue_key, schedule_key, when, m =
    ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], tonumber(ARGV[at + 5])
  redis.call('HSET', job_key, unpack(ARGV, at + 6, at + 5 + 2 * m))
  if when == '' then
    redis.call('RPUSH', queue_key, job_id)
  else
    redis.call('ZADD', schedule_key, tonumber(when), job_id)
  end
  at = at + 6 + 2 * m
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return 'ok'
