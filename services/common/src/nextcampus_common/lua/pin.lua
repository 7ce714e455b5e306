-- Pin or unpin a message (the caller moderates the course: the chat service checks). A
-- pinned message, with what belongs to it, does not expire; unpinned, it gets the course TTL
-- from then on. At most MAX_PINS (ARGV) per course.
-- KEYS: 1 message key, 2 policy, 3 events channel, 4 event log, 5 pins, 6 index
-- ARGV: 1 course key prefix, 2 message id, 3 user id, 4 '1' pin | '0' unpin,
--       5 client mutation id or '', 6 max pins, 7 default ttl seconds, 8 course id
-- Returns {'ok', changed 0|1, record} | {'dup', record} | {'not_found'} | {'deleted'}
--   | {'too_many', max}
local key, policy, pins, index = KEYS[1], KEYS[2], KEYS[5], KEYS[6]
local course, id, user, mutation = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local pinning = ARGV[4] == '1'

local again = retried(course, id, user, mutation)
if again then return again end
local h = redis.call('HMGET', key, 'user_id', 'deleted', 'pinned_at')
if not h[1] then return {'not_found'} end
if h[2] == '1' then return {'deleted'} end
local pinned = h[3] and h[3] ~= '0' or false
if pinned == pinning then
  -- Already so (a write all the same, for the WAIT: see seen_mutation).
  remember_mutation(course, user, mutation)
  redis.call('HSET', key, 'user_id', h[1])
  return {'ok', '0', read_message(course, id, user)}
end
local now_ms = now_millis()
if pinning then
  if redis.call('ZCARD', pins) >= tonumber(ARGV[6]) then return {'too_many', ARGV[6]} end
  redis.call('HSET', key, 'pinned_at', string.format('%.0f', now_ms))
  redis.call('ZADD', pins, now_ms, id)
  -- History lists it for as long as it is pinned.
  keep(course, id)
else
  unpin(course, id, policy_number(policy, 'ttl_seconds', ARGV[7]), now_ms)
end
remember_mutation(course, user, mutation)
log_change(course, pinning and 'p' or 'q', id, user)
notify_change(course, ARGV[8])
return {'ok', '1', read_message(course, id, user)}
