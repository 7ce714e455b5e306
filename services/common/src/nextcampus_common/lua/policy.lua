-- Replace a course's policy hash with exactly the given fields, in one step: a send never
-- reads half of an old policy and half of a new one. No fields: the hash is removed and the
-- chat service's defaults apply again.
--
-- KEYS: 1 policy
-- ARGV: field, value, field, value, …
-- Returns {changed 0|1, the previous ttl_seconds or ''}
local key = KEYS[1]
local current = redis.call('HGETALL', key)
local previous_ttl = ''
local have = {}
for i = 1, #current, 2 do
  have[current[i]] = current[i + 1]
end
previous_ttl = have['ttl_seconds'] or ''
local same = #current == #ARGV
for i = 1, #ARGV, 2 do
  if have[ARGV[i]] ~= ARGV[i + 1] then
    same = false
  end
end
if same then
  return {0, previous_ttl}
end
redis.call('DEL', key)
if #ARGV > 0 then
  redis.call('HSET', key, unpack(ARGV))
end
return {1, previous_ttl}
