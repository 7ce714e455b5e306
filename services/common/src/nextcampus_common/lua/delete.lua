-- Delete a message: its author, or a moderator of the course. The hash stays as a tombstone
-- (content cleared, deleted=1) until it expires, and subscribers get the tombstone. What it
-- said goes with it: its earlier versions and its reactions. A pinned message is unpinned
-- and gets the course TTL from now; so does an endorsed answer, which is un-endorsed (its
-- question too, unless something else keeps it). A thread root keeps its thread (replies,
-- counts); a deleted question leaves the question lists (questions.lua).
-- KEYS: 1 message key, 2 events channel, 3 event log, 4 pins, 5 policy, 6 index
-- ARGV: 1 caller user id, 2 '1' when the caller moderates the course, 3 course id,
--       4 message id, 5 course key prefix, 6 default ttl seconds
-- Returns {'not_found'} | {'forbidden'} | {'ok', changed 0|1, record}
local key, course, id = KEYS[1], ARGV[5], ARGV[4]
local h = redis.call('HMGET', key, 'user_id', 'deleted', 'pinned_at', 'endorsed_at', 'reply_to')
if not h[1] then
  return {'not_found'}
end
if h[1] ~= ARGV[1] and ARGV[2] ~= '1' then
  return {'forbidden'}
end
if h[2] == '1' then
  -- Deleted before (perhaps by this request's first attempt, not yet on a replica): a write,
  -- so that the WAIT after this script covers that one too.
  redis.call('HSET', key, 'deleted', '1')
  return {'ok', '0', read_message(course, id, '')}
end
redis.call('HSET', key, 'deleted', '1', 'content', '')
redis.call('HDEL', key, 'reactions', 'edited_at', 'mentions', 'mentions_course')
redis.call('DEL', edits_key(course, id), reactors_key(course, id))
if h[3] and h[3] ~= '0' then
  unpin(course, id, policy_number(KEYS[5], 'ttl_seconds', ARGV[6]), now_millis())
end
if h[4] and h[4] ~= '0' then
  local question_key = message_key(course, h[5])
  redis.call('HDEL', key, 'endorsed_at')
  redis.call('ZREM', endorsed_key(course), id)
  if redis.call('HINCRBY', question_key, 'endorsed_count', -1) <= 0 then
    redis.call('HDEL', question_key, 'endorsed_count')
  end
  local ttl, now_ms = policy_number(KEYS[5], 'ttl_seconds', ARGV[6]), now_millis()
  release(course, id, ttl, now_ms)
  release(course, h[5], ttl, now_ms)
end
-- The course's event log (the caller is the actor: the author or a moderator).
log_change(course, 'd', id, ARGV[1])
local record = read_message(course, id, '')
-- The event's fields are documented in nextcampus_common/events.py, whose encode_event must
-- build the same object (services/chat/tests/test_events.py compares them).
local event = {k = 'd', c = ARGV[3], i = id, u = record[2], b = '', t = record[4],
  m = record[6], p = record[7]}
if record[8] ~= '' then event.q = record[8] end
if record[21] == '1' then event.v = record[22] end  -- anonymous: its pseudonym
redis.call('SPUBLISH', KEYS[2], cjson.encode(event))
return {'ok', '1', record}
