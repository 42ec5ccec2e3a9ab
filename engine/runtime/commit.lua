-- Commit one processed event: pop it from its entity's queue, write the entity's state, the
-- event's outcome, its action records and the RQ jobs that run them, all or nothing, and only
-- if we still hold the entity's lock. Times are Redis's (TIME): machines may disagree on theirs.
-- KEYS: 1 entity lock, 2 entity queue, 3 event hash, 4 entity state, 5 index of non-empty queues,
--       6 when each attribute of the state was received
-- ARGV: 1 lock token, 2 event id, 3 state change (set/del/keep), 4 state JSON, 5 lock TTL ms,
--       6 '1' when the event is finished by this commit (no action left to run), 7 receive times JSON,
--       8 n, then n event field/value pairs,
--       then r, and r records: key, due in ms ('' = not watched by the sweeper), m, m field/value pairs
--       then j, and j jobs: job key, job id, queue key, schedule key, delay s ('' = now), m, m pairs
redis.replicate_commands()
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 'lost-lock'
end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then
  return 'not-head'
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('LPOP', KEYS[2])
if redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[5], KEYS[2])
end
if ARGV[3] == 'set' then
  redis.call('SET', KEYS[4], ARGV[4])
  redis.call('SET', KEYS[6], ARGV[7])
elseif ARGV[3] == 'del' then
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[6], ARGV[7])  -- when it was deleted: what was received before stays out
end
local at = 8
local n = tonumber(ARGV[at])
if n > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], unpack(ARGV, at + 1, at + 2 * n))
  redis.call('PERSIST', KEYS[3])  -- an event stored with an expiry by an older version
  if ARGV[6] == '1' then
    redis.call('ZADD', ${finished_index}, now, ARGV[2])
  end
end
at = at + 2 * n + 1
local records = tonumber(ARGV[at])
at = at + 1
for _ = 1, records do
  local key, due, m = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  redis.call('HSET', key, unpack(ARGV, at + 3, at + 2 + 2 * m))
  if due ~= '' then
    redis.call('ZADD', ${due_index}, now + tonumber(due), string.sub(key, ${action_prefix_length} + 1))
  end
  at = at + 3 + 2 * m
end
local jobs = tonumber(ARGV[at])
at = at + 1
for _ = 1, jobs do
  local job_key, job_id, queue_key, schedule_key, delay, m =
    ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], tonumber(ARGV[at + 5])
  redis.call('HSET', job_key, unpack(ARGV, at + 6, at + 5 + 2 * m))
  if delay == '' then
    redis.call('RPUSH', queue_key, job_id)
  else
    -- RQ's scheduler scores in whole seconds; rounding up never runs a delay early.
    redis.call('ZADD', schedule_key, math.ceil((now + tonumber(delay) * 1000) / 1000), job_id)
  end
  at = at + 6 + 2 * m
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return 'ok'
