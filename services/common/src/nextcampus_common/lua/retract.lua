-- Retract messages a failover lost after subscribers had seen them: each becomes a tombstone
-- (deleted=1, retracted=1) under its id, indexed and published like a deletion, so readers
-- that saw it learn that it is gone — live, in history, and when they resume after it
-- (history.lua). Written by the first chat process that notices; the others find it there.
-- The sequence moves past the retracted ids, so no later message can take one of them.
--
-- KEYS: 1 index, 2 events channel, 3 policy, 4 seq, 5 event log
-- ARGV: 1 message key prefix, 2 course id, 3 default ttl seconds, 4 the newest id that
--       survived, then per message: id, user id, timestamp ms, client message id, the
--       pseudonym of an anonymous message or ''
-- Returns {retracted here, id of a live message found under a lost id, ...}
local index_key, events_key, policy_key, seq_key, log_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, course, survivor = ARGV[1], ARGV[2], ARGV[4]
local ttl = tonumber(redis.call('HGET', policy_key, 'ttl_seconds')) or tonumber(ARGV[3])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local out = {0}
local highest = tonumber(redis.call('GET', seq_key)) or 0
for i = 5, #ARGV, 5 do
  local id, user, timestamp, cmid, pseudonym = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4]
  local key = prefix .. id
  local expire_at = tonumber(timestamp) + ttl * 1000
  if tonumber(id) > highest then highest = tonumber(id) end
  local state = redis.call('HMGET', key, 'user_id', 'retracted')
  if state[1] then
    if state[2] ~= '1' then out[#out + 1] = id end
  elseif expire_at > now_ms then
    local at = string.format('%.0f', expire_at)
    redis.call('HSET', key, 'user_id', user, 'content', '', 'timestamp', timestamp,
      'deleted', '1', 'client_message_id', cmid, 'prev_id', survivor, 'retracted', '1')
    if pseudonym ~= '' then redis.call('HSET', key, 'anonymous', '1', 'pseudonym', pseudonym) end
    redis.call('PEXPIREAT', key, at)
    redis.call('ZADD', index_key, id, id)
    if redis.call('PEXPIRETIME', index_key) < expire_at then
      redis.call('PEXPIREAT', index_key, at)
    end
    -- In the course's event log too: a reader that saw the message learns it is gone.
    redis.call('XADD', log_key, '*', 'k', 'r', 'i', id, 'u', user)
    if redis.call('PEXPIRETIME', log_key) < expire_at then
      redis.call('PEXPIREAT', log_key, at)
    end
    -- The event's fields are documented in nextcampus_common/events.py, whose encode_event must
    -- build the same object (services/chat/tests/test_events.py compares them).
    local event = {k = 'd', c = course, i = id, u = user, b = '', t = timestamp, m = cmid,
      p = survivor, r = 1}
    if pseudonym ~= '' then event.v = pseudonym end
    redis.call('SPUBLISH', events_key, cjson.encode(event))
    out[1] = out[1] + 1
  end
end
redis.call('SET', seq_key, string.format('%.0f', highest))
return out
