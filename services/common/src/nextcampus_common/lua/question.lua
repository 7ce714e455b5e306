-- Endorse or un-endorse an answer (a reply to a question), resolve or reopen a question
-- (README, "Questions and endorsed answers"). Who may is checked by the chat service
-- (moderators endorse), and here for resolving (a moderator or the question's author, which
-- only the hash knows). An endorsed answer and its question are kept past the course TTL
-- (keep); un-endorsed, each gets the TTL back from now unless something else keeps it.
-- KEYS: 1 message key, 2 policy, 3 events channel, 4 event log, 5 action rate
-- ARGV: 1 course key prefix, 2 message id, 3 user id, 4 'endorse' | 'unendorse' | 'resolve'
--       | 'reopen', 5 client mutation id or '', 6 action rate count, 7 action rate seconds,
--       8 default ttl seconds, 9 course id, 10 '1' when the caller moderates the course
-- Returns {'ok', changed 0|1, record} | {'dup', record} | {'not_found'} | {'deleted'}
--   | {'not_question'} | {'not_answer'} | {'question_deleted', question id} | {'forbidden'}
--   | {'rate_limited', retry after ms}
local key, policy = KEYS[1], KEYS[2]
local course, id, user, op, mutation = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local answering = op == 'endorse' or op == 'unendorse'

local again = retried(course, id, user, mutation)
if again then return again end
local h = redis.call('HMGET', key, 'user_id', 'deleted', 'kind', 'reply_to', 'resolved_at',
  'endorsed_at')
if not h[1] then return {'not_found'} end
if h[2] == '1' then return {'deleted'} end

local question = id
if answering then
  if not h[4] or h[4] == '' then return {'not_answer'} end
  question = h[4]
  local q = redis.call('HMGET', message_key(course, question), 'kind', 'deleted')
  if q[1] ~= 'q' then return {'not_answer'} end
  -- A deleted question takes no new endorsement; one it has can still be taken back.
  if q[2] == '1' and op == 'endorse' then return {'question_deleted', question} end
else
  if h[3] ~= 'q' then return {'not_question'} end
  if h[1] ~= user and ARGV[10] ~= '1' then return {'forbidden'} end
end

local now_ms = now_millis()
local retry_after = rate_limited(KEYS[5], now_ms, tonumber(ARGV[6]), tonumber(ARGV[7]))
if retry_after then return {'rate_limited', retry_after} end

local wanted = op == 'endorse' or op == 'resolve'
local field = answering and 6 or 5
local is_so = h[field] and h[field] ~= '0' or false
if is_so == wanted then
  -- Already so (a write all the same, for the WAIT: see seen_mutation).
  remember_mutation(course, user, mutation)
  redis.call('HSET', key, 'user_id', h[1])
  return {'ok', '0', read_message(course, id, user)}
end

local now = string.format('%.0f', now_ms)
local ttl = policy_number(policy, 'ttl_seconds', ARGV[8])
local question_key = message_key(course, question)
if op == 'endorse' then
  redis.call('HSET', key, 'endorsed_at', now)
  redis.call('ZADD', endorsed_key(course), now_ms, id)
  redis.call('HINCRBY', question_key, 'endorsed_count', 1)
  keep(course, id)
  keep(course, question)
elseif op == 'unendorse' then
  redis.call('HDEL', key, 'endorsed_at')
  redis.call('ZREM', endorsed_key(course), id)
  if redis.call('HINCRBY', question_key, 'endorsed_count', -1) <= 0 then
    redis.call('HDEL', question_key, 'endorsed_count')
  end
  release(course, id, ttl, now_ms)
  release(course, question, ttl, now_ms)
elseif op == 'resolve' then
  redis.call('HSET', key, 'resolved_at', now)
  redis.call('ZREM', open_questions_key(course), id)
  redis.call('ZADD', resolved_questions_key(course), id, id)
else
  redis.call('HDEL', key, 'resolved_at')
  redis.call('ZREM', resolved_questions_key(course), id)
  redis.call('ZADD', open_questions_key(course), id, id)
end
if not answering and not course_keeps_any(course) then
  -- The index it moved to lives at least as long as the question.
  local at = redis.call('PEXPIRETIME', key)
  local index = wanted and resolved_questions_key(course) or open_questions_key(course)
  if at > 0 then expire_no_sooner(index, at) end
end
remember_mutation(course, user, mutation)
local kinds = {endorse = 'g', unendorse = 'h', resolve = 's', reopen = 'o'}
log_change(course, kinds[op], id, user)
notify_change(course, ARGV[9])
return {'ok', '1', read_message(course, id, user)}
