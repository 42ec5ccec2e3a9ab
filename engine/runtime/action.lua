-- Every transition of an action, atomically: the action state machine of action_state.py.
--
--   pending ─claim→ running ─finish→ done | waiting (a retry job at T) | parked | failed
--   waiting ─claim→ running;  running ─rescue (lease expired)→ waiting | failed
--   scheduled (behind a delay) ─resume→ pending | dropped;  failed | parked ─retry→ pending
--
-- A job may claim an action only with the job id the record names (its "ticket"): every
-- transition that queues a job issues a new ticket, so a stale job (an RQ re-run, a job of a
-- worker presumed dead) finds nothing to do. A record is never created here except by
-- `resume` for an action a reload added, so a late transition cannot leave a half record.
-- Times are Redis's (TIME), so machines with different clocks agree on leases and due times.
-- ARGV: 1 operation, 2 action id, 3 a timestamp for RQ's job fields, then per operation (below).
-- Constants (key prefixes, RQ's job fields) are written in by lua.render.
redis.replicate_commands()
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local op, id, stamp = ARGV[1], ARGV[2], ARGV[3]
local key = ${action_prefix} .. id
local CLAIMABLE = {pending = true, waiting = true, scheduled = true, retrying = true}
local TERMINAL = {done = true, failed = true, dropped = true, purged = true}
local JOB_ALIVE = {queued = true, scheduled = true, started = true, deferred = true}

local function job_alive(job)
  -- A job RQ still means to run: queued, scheduled... or started by a worker that is still alive
  -- (a worker that lost Redis mid-job leaves its job `started` until RQ's cleanup, minutes later).
  local status, worker = unpack(redis.call('HMGET', ${job_key_prefix} .. job, 'status', 'worker_name'))
  if not JOB_ALIVE[status or ''] then
    return false
  end
  if status ~= 'started' or not worker or worker == '' then
    return true
  end
  local worker_key = ${worker_prefix} .. worker
  return redis.call('EXISTS', worker_key) == 1 and redis.call('HEXISTS', worker_key, 'death') == 0
end

local function append_json(hash, field, entry)
  -- Appends one JSON value to a JSON list held in a hash field, without decoding it.
  local list = redis.call('HGET', hash, field)
  if not list or list == '' or list == '[]' then
    list = '[' .. entry .. ']'
  else
    list = string.sub(list, 1, -2) .. ',' .. entry .. ']'
  end
  redis.call('HSET', hash, field, list)
end

local function attempts_since_retry(record)
  local ok, attempts = pcall(cjson.decode, redis.call('HGET', record, 'attempts') or '[]')
  local count = ok and type(attempts) == 'table' and #attempts or 0
  return count - (tonumber(redis.call('HGET', record, 'attempt_base')) or 0)
end

local function enqueue(record, member, delay_ms)
  -- A new ticket and the RQ job that holds it: now, or at NOW + delay_ms through RQ's scheduler.
  local ticket = redis.call('HINCRBY', record, 'tickets', 1)
  local event, rule, index = unpack(redis.call('HMGET', record, 'event_id', 'rule', 'index'))
  local job_id = ${job_id_prefix} .. event .. '-' .. rule .. '-' .. index .. '-' .. ticket
  local job_key = ${job_key_prefix} .. job_id
  redis.call('HSET', job_key, 'data', ${data_0} .. event .. ${data_1} .. rule .. ${data_2} .. index .. ${data_3},
    'created_at', stamp, 'enqueued_at', stamp, ${job_fields})
  if delay_ms > 0 then
    redis.call('HSET', job_key, 'status', 'scheduled')
    -- RQ's scheduler scores in whole seconds; rounding up never runs a retry early.
    redis.call('ZADD', ${rq_scheduled}, math.ceil((NOW + delay_ms) / 1000), job_id)
    redis.call('HSET', record, 'due_at', NOW + delay_ms)
  else
    redis.call('RPUSH', ${rq_queue}, job_id)
  end
  redis.call('HSET', record, 'job', job_id)
  redis.call('ZADD', ${due_index}, NOW + delay_ms + ${grace_ms}, member)
  return job_id
end

local function valid(record)
  -- What a job needs to be written for it; a record written half (by hand, by an older version)
  -- lacks it, and is left to an admin to delete rather than breaking every sweep.
  local event, rule, index, tickets = unpack(redis.call('HMGET', record, 'event_id', 'rule', 'index', 'tickets'))
  return event and rule and index and (not tickets or tonumber(tickets)) and true or false
end

local function close(record)
  -- The action reached a terminal state: its event has one action fewer to wait for.
  local event = redis.call('HGET', record, 'event_id')
  local event_key = ${event_prefix} .. (event or '')
  if not event or redis.call('EXISTS', event_key) == 0 then
    return
  end
  if redis.call('HEXISTS', event_key, 'open') == 0 then
    return  -- an event 0.1 stored and no action of it was adopted: it keeps its own expiry
  end
  if redis.call('HINCRBY', event_key, 'open', -1) <= 0 then
    local status = redis.call('HGET', event_key, 'status')
    if status == 'done' or status == 'failed' then
      redis.call('ZADD', ${finished_index}, NOW, event)
    end
  end
end

local function reopen(record)
  -- A terminal action lives again (an admin's retry): its event is no longer finished.
  local event = redis.call('HGET', record, 'event_id')
  local event_key = ${event_prefix} .. (event or '')
  if event and redis.call('EXISTS', event_key) == 1 then
    redis.call('HINCRBY', event_key, 'open', 1)
    redis.call('ZREM', ${finished_index}, event)
  end
end

local function listed(record)
  -- The other actions of this action's event, as its `actions` list names them.
  local event = redis.call('HGET', record, 'event_id') or ''
  local ok, entries = pcall(cjson.decode, redis.call('HGET', ${event_prefix} .. event, 'actions') or '[]')
  local found = {}
  if ok and type(entries) == 'table' then
    for _, entry in ipairs(entries) do
      if type(entry) == 'table' and entry['rule'] and tonumber(entry['index']) then
        found[#found + 1] = {rule = tostring(entry['rule']), index = tonumber(entry['index']),
                             key = ${action_prefix} .. event .. ':' .. tostring(entry['rule']) .. ':' .. tostring(entry['index'])}
      end
    end
  end
  return found
end

local function drop_followers(delay, why)
  -- A delay that will never end (an admin deleted it): what waits behind it will never run.
  local rule, index = redis.call('HGET', delay, 'rule'), tonumber(redis.call('HGET', delay, 'index'))
  for _, other in ipairs(listed(delay)) do
    if other.rule == rule and index and other.index > index and redis.call('HGET', other.key, 'status') == 'scheduled' then
      redis.call('HSET', other.key, 'status', 'dropped', 'error', why, 'updated_at', stamp)
      close(other.key)
    end
  end
end

local function application_of(record)
  local application = redis.call('HGET', record, 'application_id')
  if not application or application == '' then
    return '-'
  end
  return application
end

local function park(record, member, error)
  local application = application_of(record)
  redis.call('SADD', ${parked_apps}, application)
  redis.call('SADD', ${parked_prefix} .. application, member)
  redis.call('HSET', record, 'status', 'parked', 'error', error, 'updated_at', stamp)
  redis.call('HDEL', record, 'lease', 'lease_until')
  redis.call('ZREM', ${due_index}, member)
end

local function fail(record, member, error)
  redis.call('HSET', record, 'status', 'failed', 'error', error, 'updated_at', stamp)
  redis.call('HDEL', record, 'lease', 'lease_until')
  redis.call('ZREM', ${due_index}, member)
  redis.call('ZADD', ${dead_letters}, NOW, member)
  redis.call('HINCRBY', ${failure_counts}, redis.call('HGET', record, 'rule') or '-', 1)
  close(record)
end

local function set_fields(record, first)
  -- ARGV[first] = n, then n field/value pairs.
  local n = tonumber(ARGV[first])
  if n > 0 then
    redis.call('HSET', record, unpack(ARGV, first + 1, first + 2 * n))
  end
  return first + 1 + 2 * n
end

if redis.call('EXISTS', key) == 0 then
  redis.call('ZREM', ${due_index}, id)
  return {'missing'}
end

if op == 'claim' then
  -- ARGV: 4 job id, 5 lease ms
  local status, job, kind = unpack(redis.call('HMGET', key, 'status', 'job', 'kind'))
  if not CLAIMABLE[status] then
    return {status or 'damaged'}
  end
  if job ~= ARGV[4] then
    return {'stale'}
  end
  if kind == 'hana_update' and redis.call('SISMEMBER', ${parked_apps}, application_of(key)) == 1 then
    park(key, id, "waiting: this application's Hana token was refused; an admin's retry resumes it")
    return {'parked'}
  end
  local lease_until = NOW + tonumber(ARGV[5])
  redis.call('HSET', key, 'status', 'running', 'lease', ARGV[4], 'lease_until', lease_until, 'updated_at', stamp)
  redis.call('ZADD', ${due_index}, lease_until, id)
  return {'claimed'}
end

if op == 'finish' then
  -- ARGV: 4 job id, 5 outcome (done/waiting/parked/failed), 6 attempt JSON, 7 error, 8 response JSON,
  --       9 request JSON ('' = keep), 10 retry delay ms (waiting)
  local outcome = ARGV[5]
  local status, lease, recorded = unpack(redis.call('HMGET', key, 'status', 'lease', 'recorded'))
  if recorded == ARGV[4] then
    -- This job's outcome is on record already: the reply was lost (a connection cut, a failover)
    -- and the worker asked again. A ticket is one attempt, so it is counted once.
    return {'recorded'}
  end
  if outcome == 'done' then
    -- A write Redis allows at maxmemory first: once a script has written, Redis lets it finish
    -- (it cannot stop one halfway), so a delivery that happened is recorded even when Redis is
    -- full. Losing this record is the one way to send it again.
    redis.call('HDEL', key, 'lease', 'lease_until')
  end
  redis.call('HSET', key, 'recorded', ARGV[4])
  append_json(key, 'attempts', ARGV[6])
  redis.call('HSET', key, 'response', ARGV[8])
  if ARGV[9] ~= '' then
    redis.call('HSET', key, 'request', ARGV[9])
  end
  if outcome == 'done' then
    -- A delivery the partner answered is a fact, whoever held the lease: nothing may send it again.
    if status == 'done' then
      return {'done'}
    end
    redis.call('HSET', key, 'status', 'done', 'error', '', 'updated_at', stamp)
    redis.call('ZREM', ${due_index}, id)
    redis.call('ZREM', ${dead_letters}, id)
    redis.call('SREM', ${parked_prefix} .. application_of(key), id)  -- parked after its lease ended
    if not TERMINAL[status] then
      close(key)
    end
    return {'done'}
  end
  if status ~= 'running' or lease ~= ARGV[4] then
    return {'lost-lease'}  -- another run owns it now; our attempt is on record, nothing else changes
  end
  if outcome == 'waiting' then
    redis.call('HSET', key, 'status', 'waiting', 'error', ARGV[7], 'updated_at', stamp)
    redis.call('HDEL', key, 'lease', 'lease_until')
    enqueue(key, id, tonumber(ARGV[10]))
  elseif outcome == 'parked' then
    park(key, id, ARGV[7])
  else
    fail(key, id, ARGV[7])
  end
  return {outcome}
end

if op == 'rescue' then
  -- The sweeper: an action whose due time passed. ARGV: 4 max attempts, 5 retry delay ms,
  -- 6 the attempt to record for an interrupted delivery
  local status, job, lease_until = unpack(redis.call('HMGET', key, 'status', 'job', 'lease_until'))
  if not valid(key) then
    redis.call('ZREM', ${due_index}, id)
    return {'damaged'}
  end
  if status == 'running' then
    if (tonumber(lease_until) or 0) > NOW then
      redis.call('ZADD', ${due_index}, lease_until, id)
      return {'leased'}
    end
    -- Its worker died or froze mid-delivery: whether the partner got it is unknown.
    append_json(key, 'attempts', ARGV[6])
    local why = 'interrupted: the worker stopped during delivery (its lease expired)'
    if attempts_since_retry(key) >= tonumber(ARGV[4]) then
      fail(key, id, why)
      return {'failed'}
    end
    redis.call('HSET', key, 'status', 'waiting', 'error', why, 'updated_at', stamp)
    redis.call('HDEL', key, 'lease', 'lease_until')
    enqueue(key, id, tonumber(ARGV[5]))
    return {'waiting'}
  end
  if CLAIMABLE[status] and job then
    if job_alive(job) then
      redis.call('ZADD', ${due_index}, NOW + ${grace_ms}, id)
      return {'queued'}
    end
    enqueue(key, id, 0)  -- its job is gone: the action must not wait for nothing
    return {'requeued'}
  end
  if (status == 'pending' or status == 'retrying') and not job then
    -- Written by 0.1 (no tickets, an expiry): adopt it, and keep it and its event until finished.
    -- Its event gets the count of its open actions, which 0.1 did not keep (once, by the first).
    local event_key = ${event_prefix} .. (redis.call('HGET', key, 'event_id') or '')
    if redis.call('EXISTS', event_key) == 1 then
      local open = 0
      for _, other in ipairs(listed(key)) do
        local other_status = redis.call('HGET', other.key, 'status')
        if other_status and not TERMINAL[other_status] then
          open = open + 1
        end
      end
      redis.call('HSETNX', event_key, 'open', open)
      redis.call('PERSIST', event_key)
    end
    redis.call('PERSIST', key)
    redis.call('HSET', key, 'status', 'pending')
    enqueue(key, id, 0)
    return {'requeued'}
  end
  redis.call('ZREM', ${due_index}, id)
  return {'settled'}
end

if op == 'resume' then
  -- A delay came due; its job holds the lease. ARGV: 4 job id, 5 attempt JSON, 6 s successors, each:
  -- action id, mode (update/create/drop), delay ms before its job ('' = no job), event list entry
  -- (create), then n and n field/value pairs.
  local status, lease, event = unpack(redis.call('HMGET', key, 'status', 'lease', 'event_id'))
  if status ~= 'running' or lease ~= ARGV[4] then
    return {'lost-lease'}
  end
  local at = 7
  for _ = 1, tonumber(ARGV[6]) do
    local member, mode, delay, entry = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
    local record = ${action_prefix} .. member
    local current = redis.call('HGET', record, 'status')
    local next_at = at + 5 + 2 * tonumber(ARGV[at + 4])
    if mode == 'create' and not current then
      set_fields(record, at + 4)
      append_json(${event_prefix} .. event, 'actions', entry)
    elseif mode ~= 'create' and current == 'scheduled' then
      set_fields(record, at + 4)
    else
      mode = 'skip'  -- already moved on (a resume run twice): leave it as it is
    end
    if mode == 'create' or mode == 'update' or mode == 'drop' then
      local now_status = redis.call('HGET', record, 'status')
      if mode == 'create' and not TERMINAL[now_status] then
        reopen(record)
      elseif mode ~= 'create' and TERMINAL[now_status] then
        close(record)
      end
      if delay ~= '' then
        enqueue(record, member, tonumber(delay))
      end
    end
    at = next_at
  end
  append_json(key, 'attempts', ARGV[5])
  redis.call('HSET', key, 'status', 'done', 'error', '', 'updated_at', stamp)
  redis.call('HDEL', key, 'lease', 'lease_until')
  redis.call('ZREM', ${due_index}, id)
  close(key)
  return {'resumed'}
end

if op == 'retry' then
  -- An admin's retry: a fresh round of attempts. A parked action resumes its whole application.
  local status = redis.call('HGET', key, 'status')
  if status ~= 'failed' and status ~= 'parked' then
    return {status or 'damaged'}
  end
  if not valid(key) then
    return {'damaged'}
  end
  local members = {id}
  if status == 'parked' then
    local application = application_of(key)
    for _, member in ipairs(redis.call('SMEMBERS', ${parked_prefix} .. application)) do
      if member ~= id then
        members[#members + 1] = member
      end
    end
    redis.call('DEL', ${parked_prefix} .. application)
    redis.call('SREM', ${parked_apps}, application)
  end
  local retried = 0
  for _, member in ipairs(members) do
    local record = ${action_prefix} .. member
    local was = redis.call('HGET', record, 'status')
    if (was == 'failed' or was == 'parked') and valid(record) then
      local ok, attempts = pcall(cjson.decode, redis.call('HGET', record, 'attempts') or '[]')
      redis.call('HSET', record, 'status', 'pending', 'error', '', 'updated_at', stamp,
        'attempt_base', ok and type(attempts) == 'table' and #attempts or 0)
      redis.call('ZREM', ${dead_letters}, member)
      if was == 'failed' then
        reopen(record)
      end
      enqueue(record, member, 0)
      retried = retried + 1
    end
  end
  return {'retried', tostring(retried)}
end

if op == 'purge' then
  -- An admin's delete of a dead letter or a parked action; a damaged record goes entirely.
  local status, event = unpack(redis.call('HMGET', key, 'status', 'event_id'))
  redis.call('ZREM', ${dead_letters}, id)
  if not event or not status then
    redis.call('DEL', key)
    redis.call('ZREM', ${due_index}, id)
    return {'deleted'}
  end
  if status ~= 'parked' and status ~= 'failed' then
    return {'refused', status}
  end
  redis.call('HSET', key, 'status', 'purged', 'updated_at', stamp)
  if status == 'parked' then
    redis.call('SREM', ${parked_prefix} .. application_of(key), id)
    close(key)
  end
  if redis.call('HGET', key, 'kind') == 'delay' then
    drop_followers(key, 'its delay was deleted by an admin')
  end
  return {'purged'}
end

return redis.error_reply('unknown action operation ' .. tostring(op))
