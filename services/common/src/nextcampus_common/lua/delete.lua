-- Delete a message: its author, or a moderator of the course. The hash stays as a tombstone
-- (content cleared, deleted=1) until it expires, and subscribers get the tombstone.
-- KEYS: 1 message key, 2 events channel, 3 event log
-- ARGV: 1 caller user id, 2 '1' when the caller moderates the course, 3 course id, 4 message id
-- Returns {'not_found'} | {'forbidden'}
--       | {'ok', user_id, timestamp_ms, client_message_id, changed, prev_id}
local h = redis.call('HMGET', KEYS[1],
  'user_id', 'timestamp', 'deleted', 'client_message_id', 'prev_id')
if not h[1] then
  return {'not_found'}
end
if h[1] ~= ARGV[1] and ARGV[2] ~= '1' then
  return {'forbidden'}
end
local cmid, prev = h[4] or '', h[5] or ''
if h[3] == '1' then
  -- Deleted before (perhaps by this request's first attempt, not yet on a replica): a write,
  -- so that the WAIT after this script covers that one too.
  redis.call('HSET', KEYS[1], 'deleted', '1')
  return {'ok', h[1], h[2], cmid, '0', prev}
end
redis.call('HSET', KEYS[1], 'deleted', '1', 'content', '')
-- The course's event log (the caller is the actor: the author or a moderator). It lives as
-- long as the message it names.
redis.call('XADD', KEYS[3], '*', 'k', 'd', 'i', ARGV[4], 'u', ARGV[1])
local expire_at = redis.call('PEXPIRETIME', KEYS[1])
if expire_at > 0 and redis.call('PEXPIRETIME', KEYS[3]) < expire_at then
  redis.call('PEXPIREAT', KEYS[3], expire_at)
end
-- The event's fields are documented in nextcampus_common/events.py, whose encode_event must
-- build the same object (services/chat/tests/test_events.py compares them).
redis.call('SPUBLISH', KEYS[2], cjson.encode({
  k = 'd', c = ARGV[3], i = ARGV[4], u = h[1], b = '', t = h[2], m = cmid, p = prev,
}))
return {'ok', h[1], h[2], cmid, '1', prev}
