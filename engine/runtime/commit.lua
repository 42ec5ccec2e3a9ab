-- Commit one processed event: pop it from its entity's queue, write the entity's state, the
-- event's outcome, its action records and the RQ jobs that run them, all or nothing, and only
-- if we still hold the entity's lock. Times are Redis's (TIME): machines may disagree on theirs.
-- KEYS: 1 entity lock, 2 entity queue, 3 event hash, 4 entity state, 5 index of non-empty queues,
--       6 when each attribute of the state was received
-- ARGV: 1 lock token, 2 event id, 3 state change (set/del/keep), 4 state JSON, 5 lock TTL ms,
--       6 '1' when the event is finished by this commit (no action left to run), 7 receive times JSON,
--       8 n, then n event field/value pairs,
--       then the event's indexes (indexes.py): receive score in µs ('' = none), the `indexed` JSON, the
--       entity-keys set and the entity index to add to it ('' = none), k, and k sorted sets,
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

local function reindex(at, k)
  -- The console's indexes (indexes.py). An event committed before (put back in its queue and
  -- processed again) first leaves the sets it no longer belongs to: no stale status, no rule it
  -- no longer hears, whatever changed in between.
  local id, score = ARGV[2], ARGV[at]
  local joined = {}
  for i = at + 5, at + 4 + k do
    joined[ARGV[i]] = true
  end
  local ok, before = pcall(cjson.decode, redis.call('HGET', KEYS[3], ${indexed_field}) or '[]')
  if ok and type(before) == 'table' then
    for _, key in ipairs(before) do
      if type(key) == 'string' and not joined[key] then
        redis.call('ZREM', key, id)
      end
    end
  end
  for i = at + 5, at + 4 + k do
    redis.call('ZADD', ARGV[i], score, id)
    if string.sub(ARGV[i], 1, #${rule_index_prefix}) == ${rule_index_prefix} then
      redis.call('ZREMRANGEBYRANK', ARGV[i], 0, -(tonumber(${rule_heard_kept}) + 1))  -- the latest: a rule's page
    end
  end
  if ARGV[at + 2] ~= '' then
    redis.call('SADD', ARGV[at + 2], ARGV[at + 3])
  end
  redis.call('HSET', KEYS[3], ${indexed_field}, ARGV[at + 1])
  -- Every event received from now on is indexed when committed: the views walk only what came before.
  redis.call('SET', ${indexed_since}, clock[1] .. string.rep('0', 6 - #clock[2]) .. clock[2], 'NX')
end

local at = 8
local n = tonumber(ARGV[at])
local indexes_at = at + 2 * n + 1
local k = tonumber(ARGV[indexes_at + 4])
if n > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], unpack(ARGV, at + 1, at + 2 * n))
  redis.call('PERSIST', KEYS[3])  -- an event stored with an expiry by an older version
  if ARGV[6] == '1' then
    redis.call('ZADD', ${finished_index}, now, ARGV[2])
  end
  if ARGV[indexes_at] ~= '' then
    reindex(indexes_at, k)
  end
end
at = indexes_at + 5 + k
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
