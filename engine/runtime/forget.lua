-- Remove finished events with everything that is theirs: the hash, its action records, and their
-- places in every index, the console's too (the sorted sets its `indexed` field names; an entity
-- index left empty leaves its id's entity-keys set). An event no longer in the finished index (an
-- admin retried one of its actions meanwhile) is left alone: membership there is the one test of
-- "finished".
-- ARGV: event ids. Deletes only (no write that Redis refuses at maxmemory), so it frees memory
-- even when Redis is full.
local removed = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZSCORE', ${finished_index}, id) then
    local event_key = ${event_prefix} .. id
    local ok, actions = pcall(cjson.decode, redis.call('HGET', event_key, 'actions') or '[]')
    if ok and type(actions) == 'table' then
      for _, entry in ipairs(actions) do
        if type(entry) == 'table' and entry['rule'] and entry['index'] then
          local action = id .. ':' .. tostring(entry['rule']) .. ':' .. tostring(entry['index'])
          redis.call('DEL', ${action_prefix} .. action)
          redis.call('ZREM', ${dead_letters}, action)
          redis.call('ZREM', ${due_index}, action)
        end
      end
    end
    local indexed, entity_id = unpack(redis.call('HMGET', event_key, ${indexed_field}, 'entity_id'))
    local listed, keys = pcall(cjson.decode, indexed or '[]')
    if listed and type(keys) == 'table' then
      for _, key in ipairs(keys) do
        if type(key) == 'string' then
          redis.call('ZREM', key, id)
          if entity_id and string.sub(key, 1, #${entity_index_prefix}) == ${entity_index_prefix}
              and redis.call('EXISTS', key) == 0 then
            redis.call('SREM', ${entity_keys_prefix} .. entity_id, key)
          end
        end
      end
    end
    redis.call('DEL', event_key)
    redis.call('ZREM', ${events_index}, id)
    redis.call('ZREM', ${finished_index}, id)
    removed = removed + 1
  end
end
return removed
