-- Index the events no worker commits (quarantined by the receiver) by status and type, and move
-- the sweep's cursor forward, never back: the maintenance of two workers may sweep at once.
-- An event removed meanwhile (retention) is left alone: indexing it would bring back its hash.
-- ARGV: 1 the cursor reached (receive µs), 2 the status the events must still have, then for each
--       event: id, receive score, its `indexed` JSON, k, and k sorted sets
local at = 3
while at <= #ARGV do
  local id, score, listing, k = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local event_key = ${event_prefix} .. id
  if redis.call('HGET', event_key, 'status') == ARGV[2] then
    for i = at + 4, at + 3 + k do
      redis.call('ZADD', ARGV[i], score, id)
    end
    redis.call('HSET', event_key, ${indexed_field}, listing)
  end
  at = at + 4 + k
end
local swept = redis.call('GET', ${swept})
if not swept or tonumber(swept) < tonumber(ARGV[1]) then
  redis.call('SET', ${swept}, ARGV[1])
end
return 'ok'
