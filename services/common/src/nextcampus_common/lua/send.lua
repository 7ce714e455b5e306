-- One send, atomically, in one round trip (README, "Data model"):
-- dedupe by client_message_id, read the policy, check read-only / length / rate, pick the
-- next id, store the message with the course TTL, index it, trim expired index entries,
-- SPUBLISH the event.
--
-- Ids: the primary's clock in microseconds, or the previous id + 1 when the clock is not
-- past it. A failover that loses the newest writes rolls the stored previous id back, but
-- not the clock: a failover takes longer than any clock difference between Redis nodes, so
-- a new id is never one that was handed out (and published) before. Each message and event
-- carries the id before it (`prev_id`, `p`), so consumers find gaps without contiguous ids.
--
-- KEYS: 1 policy, 2 seq (the newest id), 3 index, 4 events channel, 5 client idempotency
--       key, 6 rate key, 7 event log
-- ARGV: 1 course key prefix, 2 user id, 3 content, 4 client message id,
--       5 default ttl seconds, 6 default max length, 7 default rate messages,
--       8 default rate seconds, 9 course id, 10 the message replied to or '',
--       11 the users it mentions (comma-separated, checked by the service) or '',
--       12 '1' when it mentions the whole course (@course) or '',
--       13 '1' when the sender moderates the course (exempt from slow mode) or ''
--       14 'q' for a question (never a reply: the service checks) or '',
--       15 '1' to send anonymously to classmates or '', 16 a random salt (hex): the course's
--       pseudonym salt unless it has one (lib/course.lua pseudonym_of)
--
-- A reply belongs to the thread of its root (a reply to a reply, to the same root): the
-- root counts it, remembers when and who, and lives at least as long as its newest reply.
-- Each user it mentions (but the author) finds it in their mention index; sending marks
-- the course read for the author up to the new message.
-- Returns one of:
--   {'ok', id, timestamp_ms, prev_id, thread root or '', pseudonym of an anonymous send or ''}
--   {'dup', record}  (the message stored by the first attempt, as it is now)
--   {'read_only', until ms or ''} | {'too_long', max_length}
--   | {'rate_limited', retry_after_ms[, slow mode seconds]}
--   | {'reply_not_found'} | {'reply_deleted'} | {'anonymous_disabled'}
local policy_key, seq_key, index_key, events_key, client_key, rate_key, log_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local course, user, content, cmid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local prefix = course .. 'message:'
local reply_to = ARGV[10]

local existing = redis.call('GET', client_key)
if existing then
  local record = read_message(course, existing, '')
  if record then
    -- A write, so that the WAIT after this script covers the first attempt's write too (it
    -- may not have reached a replica): replication is one ordered stream per primary.
    redis.call('SET', client_key, existing, 'KEEPTTL')
    return {'dup', record}
  end
end

local p = redis.call('HMGET', policy_key,
  'ttl_seconds', 'max_length', 'read_only', 'rate_limit_messages', 'rate_limit_seconds',
  'anonymous_posting')
local ttl = tonumber(p[1]) or tonumber(ARGV[5])
local max_length = tonumber(p[2]) or tonumber(ARGV[6])
local rate_messages = tonumber(p[4]) or tonumber(ARGV[7])
local rate_seconds = tonumber(p[5]) or tonumber(ARGV[8])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if p[3] == '1' or p[3] == 'true' then
  return {'read_only', ''}
end
-- Timetable modes, by Redis's own clock: no operator round trip at a window's edge.
local mode, slow_seconds, mode_until = scheduled_mode(policy_key, now_ms)
if mode == 'r' then
  return {'read_only', string.format('%.0f', mode_until)}
end
-- Characters, not bytes: count the bytes that do not continue a UTF-8 sequence.
local _, length = string.gsub(content, '[^\128-\191]', '')
if length > max_length then
  return {'too_long', max_length}
end
local anonymous = ARGV[15] == '1'
if anonymous and p[6] ~= 'classmates' then
  return {'anonymous_disabled'}
end

local root = ''
if reply_to ~= '' then
  local target = redis.call('HMGET', prefix .. reply_to, 'user_id', 'deleted', 'reply_to')
  if not target[1] then return {'reply_not_found'} end
  if target[2] == '1' then return {'reply_deleted'} end
  root = (target[3] and target[3] ~= '') and target[3] or reply_to
  if redis.call('EXISTS', prefix .. root) == 0 then return {'reply_not_found'} end
end

-- Slow mode: one message per user per slow_seconds (moderators exempt), on top of the
-- rate limit; the key is set only once the send is sure to go through.
local slow_key = nil
if mode == 's' and ARGV[13] ~= '1' then
  slow_key = course .. 'slow:' .. user
  local wait = redis.call('PTTL', slow_key)
  if wait > 0 then return {'rate_limited', wait, slow_seconds} end
end

local retry_after = rate_limited(rate_key, now_ms, rate_messages, rate_seconds)
if retry_after then
  return {'rate_limited', retry_after}
end
if slow_key then redis.call('SET', slow_key, '1', 'PX', slow_seconds * 1000) end

local prev = redis.call('GET', seq_key) or ''
local next_id = (tonumber(prev) or 0) + 1
local clock_id = tonumber(t[1]) * 1000000 + tonumber(t[2])
if clock_id > next_id then next_id = clock_id end
local id = string.format('%.0f', next_id)
redis.call('SET', seq_key, id)
local expire_at = string.format('%.0f', now_ms + ttl * 1000)
local now = string.format('%.0f', now_ms)

local message_key = prefix .. id
redis.call('HSET', message_key, 'user_id', user, 'content', content, 'timestamp', now,
  'deleted', '0', 'client_message_id', cmid, 'prev_id', prev)
redis.call('PEXPIREAT', message_key, expire_at)
-- Who the course's members see: the author, or their pseudonym (threads' participants too).
local shown = user
if anonymous then
  shown = pseudonym_of(course, user, ARGV[16], tonumber(expire_at))
  redis.call('HSET', message_key, 'anonymous', '1', 'pseudonym', shown)
end
if root ~= '' then
  redis.call('HSET', message_key, 'reply_to', root)
  local root_key = prefix .. root
  local participants = {shown}
  for other in string.gmatch(redis.call('HGET', root_key, 'participants') or '', '[^,]+') do
    if other ~= shown and #participants < 5 then participants[#participants + 1] = other end
  end
  redis.call('HINCRBY', root_key, 'reply_count', 1)
  redis.call('HSET', root_key, 'last_reply_at', now, 'participants', table.concat(participants, ','))
  redis.call('ZADD', thread_key(course, root), id, id)
  extend_expiry(root_key, tonumber(expire_at))
  follow_message_expiry(course, root)
end
local mentions, mentions_course = ARGV[11] or '', ARGV[12] or ''
local function index_mention(key)
  redis.call('ZADD', key, id, id)
  drop_expired_oldest(course, key, 4)
  expire_no_sooner(key, tonumber(expire_at))
end
if mentions ~= '' then
  redis.call('HSET', message_key, 'mentions', mentions)
  for other in string.gmatch(mentions, '[^,]+') do
    if other ~= user then index_mention(mentioned_key(course, other)) end
  end
end
if mentions_course == '1' then
  redis.call('HSET', message_key, 'mentions_course', '1')
  index_mention(mentioned_course_key(course))
end
if ARGV[14] == 'q' then
  -- Listed among the open questions for as long as any message of it may be kept.
  redis.call('HSET', message_key, 'kind', 'q')
  local open = open_questions_key(course)
  redis.call('ZADD', open, id, id)
  drop_expired_oldest(course, open, 4)
  if not course_keeps_any(course) then expire_no_sooner(open, tonumber(expire_at)) end
end
redis.call('HSET', reads_key(course), user, id)
expire_no_sooner(reads_key(course), tonumber(expire_at))
redis.call('ZADD', index_key, id, id)
drop_expired_oldest(course, index_key, 8)
-- The index lives as long as its newest message (and for ever while a message is pinned).
extend_expiry(index_key, tonumber(expire_at))
redis.call('SET', client_key, id, 'PXAT', expire_at)
-- The course's event log: this change, and nothing older than what the TTL keeps.
redis.call('XADD', log_key, 'MINID', string.format('%.0f', now_ms - ttl * 1000), '*',
  'k', 'a', 'i', id, 'u', user)
if redis.call('PEXPIRETIME', log_key) < tonumber(expire_at) then
  redis.call('PEXPIREAT', log_key, expire_at)
end
-- The event's fields are documented in nextcampus_common/events.py, whose encode_event must
-- build the same object (services/chat/tests/test_events.py compares them).
local event = {k = 'a', c = ARGV[9], i = id, u = user, b = content, t = now, m = cmid, p = prev}
if root ~= '' then event.q = root end
if mentions ~= '' then event.o = mentions end
if mentions_course == '1' then event.w = 1 end
if ARGV[14] == 'q' then event.y = 'q' end
if anonymous then event.v = shown end
redis.call('SPUBLISH', events_key, cjson.encode(event))
return {'ok', id, now, prev, root, anonymous and shown or ''}
