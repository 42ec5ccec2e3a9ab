-- Write the observations of the attribute catalogue (fields.py) a worker gathered: for each name,
-- how many events carried it, its type and its latest distinct examples; last seen is now (TIME).
-- New names past the bound of a catalogue, and catalogues past theirs, are counted as dropped
-- instead (each time one was carried). One read and two writes per catalogue, whatever the number
-- of names: a call from Lua costs more than the work around it.
-- ARGV: c, then c catalogues: "<application>:<entity>", carried but left out before, m,
--       then m names: name, count, type ('' = unknown), k, k examples (the latest first)
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local most = tonumber(${examples})
local at = 2
for _ = 1, tonumber(ARGV[1]) do
  local name, dropped, m = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local seen, info = ${seen_prefix} .. name, ${info_prefix} .. name
  local open = redis.call('SISMEMBER', ${catalogues}, name) == 1
  if not open and redis.call('SCARD', ${catalogues}) < tonumber(${max_catalogues}) then
    redis.call('SADD', ${catalogues}, name)
    open = true
  end
  -- Where each name's fields start, and the names, for one HMGET.
  local starts, names = {}, {}
  local i = at + 3
  for j = 1, m do
    starts[j], names[j] = i, ARGV[i]
    i = i + 4 + tonumber(ARGV[i + 3])
  end
  if open and m > 0 then
    local size, room = redis.call('ZCARD', seen), tonumber(${max_attributes})
    local known = redis.call('HMGET', info, unpack(names))
    local scores, entries = {}, {}
    for j = 1, m do
      local s = starts[j]
      local count, kind, k = tonumber(ARGV[s + 1]), ARGV[s + 2], tonumber(ARGV[s + 3])
      local entry = nil
      if known[j] then
        local ok, decoded = pcall(cjson.decode, known[j])
        entry = (ok and type(decoded) == 'table') and decoded or {}
      elseif size < room then
        size = size + 1
        entry = {}
      else
        dropped = dropped + count
      end
      if entry then
        entry.count = (tonumber(entry.count) or 0) + count
        if kind ~= '' then
          entry.type = kind
        end
        if k > 0 then
          local examples, taken = {}, {}
          for e = s + 4, s + 3 + k do
            if #examples < most and not taken[ARGV[e]] then
              examples[#examples + 1], taken[ARGV[e]] = ARGV[e], true
            end
          end
          if type(entry.examples) == 'table' then
            for _, other in ipairs(entry.examples) do
              if #examples < most and type(other) == 'string' and not taken[other] then
                examples[#examples + 1], taken[other] = other, true
              end
            end
          end
          entry.examples = examples
        end
        scores[#scores + 1], scores[#scores + 2] = now, names[j]
        entries[#entries + 1], entries[#entries + 2] = names[j], cjson.encode(entry)
      end
    end
    if #scores > 0 then
      redis.call('ZADD', seen, unpack(scores))
      redis.call('HSET', info, unpack(entries))
    end
  elseif not open then
    for j = 1, m do
      dropped = dropped + tonumber(ARGV[starts[j] + 1])
    end
  end
  if dropped > 0 then
    redis.call('HINCRBY', ${dropped_counts}, open and name or '*', dropped)
  end
  at = i
end
return 'ok'
