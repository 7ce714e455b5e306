-- Replace a course's policy hash with exactly the given fields, in one step: a send never
-- reads half of an old policy and half of a new one. No fields: the policy is removed and
-- the chat service's defaults apply again.
--
-- When the TTL changes, the course's messages must be re-timed (retime.lua, in batches).
-- The hash remembers that until it is done (`retime_pending`, cleared by the caller after
-- the last batch), so a re-time cut short — the operator killed, Redis away — is finished
-- by the next reconcile instead of leaving messages to expire by the old TTL.
--
-- KEYS: 1 policy
-- ARGV: field, value, field, value, …  (never retime_pending)
-- Returns {changed 0|1, the previous ttl_seconds or '', retime pending 0|1}
local key = KEYS[1]
local PENDING = 'retime_pending'
local current = redis.call('HGETALL', key)
local have, count = {}, 0
for i = 1, #current, 2 do
  if current[i] ~= PENDING then
    have[current[i]] = current[i + 1]
    count = count + 1
  end
end
local pending = redis.call('HEXISTS', key, PENDING) == 1
local previous_ttl = have['ttl_seconds'] or ''

local wanted_ttl = ''
local same = count * 2 == #ARGV
for i = 1, #ARGV, 2 do
  if have[ARGV[i]] ~= ARGV[i + 1] then
    same = false
  end
  if ARGV[i] == 'ttl_seconds' then
    wanted_ttl = ARGV[i + 1]
  end
end
pending = pending or wanted_ttl ~= previous_ttl
if not same then
  redis.call('DEL', key)
  if #ARGV > 0 then
    redis.call('HSET', key, unpack(ARGV))
  end
end
if pending then
  redis.call('HSET', key, PENDING, '1')
end
return {same and 0 or 1, previous_ttl, pending and 1 or 0}
