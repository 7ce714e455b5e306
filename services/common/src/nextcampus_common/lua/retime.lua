-- One batch of re-timing a course's messages to `timestamp + ttl` after its TTL changed,
-- walking the course index by sequence (never KEYS). A message whose new expiry has passed
-- is removed now, with its index entry; so are index entries whose messages are gone. The
-- retry key of a message (client_message_id) expires with it. The last batch lets the
-- index live exactly as long as its newest message.
--
-- Pinned messages, endorsed answers and their questions keep no expiry (and the indexes
-- none while any is kept); the question indexes end as the course index; a thread's root
-- is timed from its newest reply when that is later; what belongs to a message (its edits,
-- reactors, thread index) follows it.
--
-- KEYS: 1 index, 2 pins, 3 endorsed answers
-- ARGV: 1 course key prefix, 2 retry key prefix (`…:client:`), 3 ttl in ms,
--       4 exclusive lower bound of the sequence ('-inf' to start), 5 batch size
-- Returns {retimed, removed, last sequence seen or '', done 0|1}
local index, course, client_prefix = KEYS[1], ARGV[1], ARGV[2]
local prefix = course .. 'message:'
local ttl_ms, after, batch = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local ids = redis.call('ZRANGEBYSCORE', index, after, '+inf', 'LIMIT', 0, batch)
local retimed, removed, last = 0, 0, ''
for _, id in ipairs(ids) do
  last = id
  local key = prefix .. id
  local h = redis.call('HMGET', key, 'timestamp', 'user_id', 'client_message_id', 'pinned_at',
    'last_reply_at', 'endorsed_at', 'endorsed_count')
  local retry_key = nil
  if h[2] and h[3] and h[3] ~= '' then
    retry_key = client_prefix .. h[2] .. ':' .. h[3]
  end
  if not h[1] then
    redis.call('ZREM', index, id)
  elseif (h[4] and h[4] ~= '0') or (h[6] and h[6] ~= '0') or (tonumber(h[7]) or 0) > 0 then
    retimed = retimed + 1  -- pinned or endorsed: no expiry until unpinned, un-endorsed
  else
    local expire_at = math.max(tonumber(h[1]), tonumber(h[5]) or 0) + ttl_ms
    if expire_at <= now_ms then
      redis.call('DEL', key, edits_key(course, id), reactors_key(course, id),
        thread_key(course, id))
      redis.call('ZREM', index, id)
      if retry_key then
        redis.call('DEL', retry_key)
      end
      removed = removed + 1
    else
      local at = string.format('%.0f', expire_at)
      redis.call('PEXPIREAT', key, at)
      follow_message_expiry(course, id)
      if retry_key then
        redis.call('PEXPIREAT', retry_key, at)
      end
      retimed = retimed + 1
    end
  end
end

local done = #ids < batch
local questions = {open_questions_key(course), resolved_questions_key(course)}
if done and (redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1) then
  redis.call('PERSIST', index)
  for _, key in ipairs(questions) do redis.call('PERSIST', key) end
elseif done then
  local newest = redis.call('ZRANGE', index, -1, -1)
  if #newest == 0 then
    redis.call('DEL', index)
  else
    local expiry = redis.call('PEXPIRETIME', prefix .. newest[1])
    if expiry > 0 then
      redis.call('PEXPIREAT', index, expiry)
      -- Every question is a message of the index: none outlives its newest message.
      for _, key in ipairs(questions) do
        if redis.call('EXISTS', key) == 1 then redis.call('PEXPIREAT', key, expiry) end
      end
    end
  end
end
return {retimed, removed, last, done and 1 or 0}
