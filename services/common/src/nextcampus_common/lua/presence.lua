-- Who is online in a course (README, "Data model"): each GraphQL process ("instance") holds
-- a set of the users it has a subscription of the course for, alive while the instance
-- renews it (the heartbeat: per course and instance, never per user). A user is online while
-- any live instance holds them; `online` and `since` are that union, kept by these ops, so
-- counting is ZCARD and a page of members one range read. An instance that dies without a
-- goodbye is reaped by the next op of anyone on the course once its deadline passed: its
-- set outlives the deadline by a TTL so that the reaper can read it once.
-- KEYS: 1 instances (sorted set: instance -> liveness deadline, ms), 2 online (sorted set of
--       the users online, every score 0: ordered by id), 3 since (hash: user -> ms online
--       since), 4 events channel
-- ARGV: 1 op 'join' | 'leave' | 'heartbeat' | 'read', 2 course key prefix, 3 course id,
--       4 instance id, 5 ttl ms, then join/leave: 6 user id; heartbeat: 6... users to drop
--       from the instance (their own leave failed); read: 6 after ('' or a user id), 7 limit
-- Returns join/leave {changed 0|1, online count}; heartbeat {users the instance holds,
--   online count}; read {online count, has more 0|1, user, since, user, since, ...}
-- Publishes {k: 'n', c, e: 'p', j: [[user, since], ...], l: [user, ...], n: count} when
-- someone came online or went offline (events.py).
local instances, online, since = KEYS[1], KEYS[2], KEYS[3]
local op, course, course_id, instance = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl_ms = tonumber(ARGV[5])
local now = now_millis()
local joined, left = {}, {}

local function instance_key(name) return course .. 'presence:' .. name end
local own = instance_key(instance)

-- Whether a live instance other than `except` holds `user`: one SISMEMBER per instance.
local function held_elsewhere(user, except)
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', instances, '(' .. now, '+inf')) do
    if name ~= except and redis.call('SISMEMBER', instance_key(name), user) == 1 then
      return true
    end
  end
  return false
end

local function went_offline(user)
  if redis.call('ZREM', online, user) == 1 then
    redis.call('HDEL', since, user)
    left[#left + 1] = user
  end
end

-- Instances past their deadline died without a goodbye: their users go offline unless a
-- live instance holds them too. Each dead set is read once, then deleted.
local function reap()
  local dead = redis.call('ZRANGEBYSCORE', instances, '-inf', now)
  if #dead == 0 then return end
  local lost_track = false
  for _, name in ipairs(dead) do
    local key = instance_key(name)
    if redis.call('EXISTS', key) == 0 then lost_track = true end
    for _, user in ipairs(redis.call('SMEMBERS', key)) do
      if not held_elsewhere(user, nil) then went_offline(user) end
    end
    redis.call('DEL', key)
    redis.call('ZREM', instances, name)
  end
  if lost_track then
    -- A dead instance's set expired before anyone reaped it: check everyone once.
    for _, user in ipairs(redis.call('ZRANGE', online, 0, -1)) do
      if not held_elsewhere(user, nil) then went_offline(user) end
    end
  end
end

-- The union lives as long as the longest-lived instance (+ the reaper's TTL); with no
-- instance left, nobody is online.
local function keep_union()
  local newest = redis.call('ZRANGE', instances, -1, -1, 'WITHSCORES')
  if #newest == 0 then
    redis.call('DEL', online, since)
    return
  end
  local at = string.format('%.0f', tonumber(newest[2]) + ttl_ms)
  redis.call('PEXPIREAT', instances, at)
  redis.call('PEXPIREAT', online, at)
  redis.call('PEXPIREAT', since, at)
end

local function leave(user)
  if redis.call('SREM', own, user) == 0 then return end
  if redis.call('SCARD', own) == 0 then
    redis.call('ZREM', instances, instance)  -- its last user left: a goodbye
  end
  if not held_elsewhere(user, instance) then went_offline(user) end
end

local function renew()
  local deadline = now + ttl_ms
  redis.call('ZADD', instances, deadline, instance)
  redis.call('PEXPIREAT', own, string.format('%.0f', deadline + ttl_ms))
end

reap()
local reply
if op == 'join' then
  local user = ARGV[6]
  redis.call('SADD', own, user)
  renew()
  if redis.call('ZADD', online, 'NX', 0, user) == 1 then
    redis.call('HSET', since, user, now)
    joined[1] = {user, now}
  end
  reply = {#joined}
elseif op == 'leave' then
  leave(ARGV[6])
  reply = {#left}
elseif op == 'heartbeat' then
  for i = 6, #ARGV do leave(ARGV[i]) end
  local held = redis.call('SCARD', own)
  if held > 0 then renew() else redis.call('ZREM', instances, instance) end
  reply = {held}
else  -- read
  local after, limit = ARGV[6], tonumber(ARGV[7])
  reply = {0, 0}
  if limit > 0 then
    local low = after ~= '' and ('(' .. after) or '-'
    local users = redis.call('ZRANGEBYLEX', online, low, '+', 'LIMIT', 0, limit + 1)
    if #users > limit then
      reply[2] = 1
      users[#users] = nil
    end
    if #users > 0 then
      local times = redis.call('HMGET', since, unpack(users))
      for i, user in ipairs(users) do
        reply[#reply + 1] = user
        reply[#reply + 1] = times[i] or '0'
      end
    end
  end
end
keep_union()
local count = redis.call('ZCARD', online)
if #joined > 0 or #left > 0 then
  redis.call('SPUBLISH', KEYS[4], cjson.encode({k = 'n', c = course_id, e = 'p', j = joined,
    l = left, n = count}))
end
if op == 'read' then
  reply[1] = count
else
  reply[2] = count
end
return reply
