-- A user is typing in a course (README, "Data model"): at most one event per user and course
-- per throttle; nothing is stored but the throttle's key, and the event goes to the course's
-- channel only (never the event log): {k: 'n', c, e: 't', u, h: thread, x: ttl ms}.
-- KEYS: 1 the user's typing throttle key, 2 events channel, 3 policy
-- ARGV: 1 course id, 2 user id, 3 thread root id or '', 4 throttle ms, 5 ttl ms
-- Returns {1, 0} published | {0, ms until the throttle ends} | {-1, 0} the course is
-- read-only, archived or in a read-only window (nobody can send there, so nobody types)
if is_read_only(KEYS[3]) then return {-1, 0} end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SPUBLISH', KEYS[2], cjson.encode({k = 'n', c = ARGV[1], e = 't', u = ARGV[2],
  h = ARGV[3], x = tonumber(ARGV[5])}))
return {1, 0}
