-- Mark a course read up to a message, for one user (README, "Read state, unread counts and
-- mentions"). A marker never moves back; marking again changes nothing. A marker that moved
-- is told on the course's channel as an ephemeral notice naming the user only, never the
-- position, so that their other clients read their counts again: {k: 'n', c, e: 'r', u}.
-- KEYS: 1 the course's read markers, 2 events channel
-- ARGV: 1 course key prefix, 2 user id, 3 message id, 4 default ttl seconds, 5 course id
-- Returns {'ok', read state (lib/course.lua read_state)} | {'not_found'}
local course, user, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', message_key(course, id)) == 0 then return {'not_found'} end
local current = tonumber(redis.call('HGET', KEYS[1], user) or '0')
if current < tonumber(id) then
  redis.call('HSET', KEYS[1], user, id)
  -- The markers outlive every message they mark: those expire within the course TTL.
  local ttl = policy_number(course .. 'policy', 'ttl_seconds', ARGV[4])
  expire_no_sooner(KEYS[1], now_millis() + ttl * 1000)
  redis.call('SPUBLISH', KEYS[2], cjson.encode({k = 'n', c = ARGV[5], e = 'r', u = user}))
end
return {'ok', read_state(course, user)}
