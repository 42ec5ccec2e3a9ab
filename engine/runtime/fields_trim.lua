-- Forget the attributes of the catalogue (fields.py) last seen before ARGV[1] (ms, Redis's clock),
-- with a catalogue left empty and its count of dropped names. Deletes only: it runs with the rest
-- of retention, also when Redis is at maxmemory.
local cutoff, forgotten = '(' .. ARGV[1], 0
for _, name in ipairs(redis.call('SMEMBERS', ${catalogues})) do
  local seen, info = ${seen_prefix} .. name, ${info_prefix} .. name
  local old = redis.call('ZRANGEBYSCORE', seen, '-inf', cutoff)
  for i = 1, #old, 500 do
    local part = {unpack(old, i, math.min(i + 499, #old))}
    redis.call('ZREM', seen, unpack(part))
    redis.call('HDEL', info, unpack(part))
  end
  forgotten = forgotten + #old
  if redis.call('EXISTS', seen) == 0 then
    redis.call('DEL', info)
    redis.call('SREM', ${catalogues}, name)
    redis.call('HDEL', ${dropped}, name)
  end
end
if redis.call('SCARD', ${catalogues}) < tonumber(${max_catalogues}) then
  redis.call('HDEL', ${dropped}, '*')  -- room again for another application's catalogue
end
return forgotten
