-- Add or remove a user's reaction to a message: one per user per emoji, at most
-- MAX_EMOJI (ARGV) distinct emoji per message. The message carries the counts (`reactions`,
-- JSON [[emoji, count], ...] in the order each emoji was first used); who reacted with what
-- is the reactors hash (user -> space-separated emoji), living as long as the message.
-- KEYS: 1 message key, 2 policy, 3 events channel, 4 event log, 5 reactors, 6 action rate
-- ARGV: 1 course key prefix, 2 message id, 3 user id, 4 emoji, 5 '1' add | '0' remove,
--       6 client mutation id or '', 7 max distinct emoji, 8 action rate count,
--       9 action rate seconds, 10 course id
-- Returns {'ok', changed 0|1, record} | {'dup', record} | {'not_found'} | {'deleted'}
--   | {'read_only'} | {'too_many', max} | {'rate_limited', retry after ms}
local key, policy, reactors = KEYS[1], KEYS[2], KEYS[5]
local course, id, user, emoji, mutation = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[6]
local adding = ARGV[5] == '1'

local again = retried(course, id, user, mutation)
if again then return again end
local h = redis.call('HMGET', key, 'user_id', 'deleted', 'reactions')
if not h[1] then return {'not_found'} end
if h[2] == '1' then return {'deleted'} end
local read_only, read_only_until = is_read_only(policy)
if read_only then return {'read_only', read_only_until} end
local retry_after = rate_limited(KEYS[6], now_millis(), tonumber(ARGV[8]), tonumber(ARGV[9]))
if retry_after then return {'rate_limited', retry_after} end

local mine = {}
local has_it = false
for e in string.gmatch(redis.call('HGET', reactors, user) or '', '[^ ]+') do
  mine[#mine + 1] = e
  if e == emoji then has_it = true end
end
if has_it == adding then
  -- Already so (a write all the same, for the WAIT: see seen_mutation).
  remember_mutation(course, user, mutation)
  redis.call('HSET', key, 'user_id', h[1])
  return {'ok', '0', read_message(course, id, user)}
end

local counts = (h[3] and h[3] ~= '') and cjson.decode(h[3]) or {}
local position = nil
for i, pair in ipairs(counts) do
  if pair[1] == emoji then position = i end
end
if adding then
  if not position then
    if #counts >= tonumber(ARGV[7]) then return {'too_many', ARGV[7]} end
    counts[#counts + 1] = {emoji, 0}
    position = #counts
  end
  counts[position][2] = counts[position][2] + 1
  mine[#mine + 1] = emoji
else
  counts[position][2] = counts[position][2] - 1
  if counts[position][2] <= 0 then table.remove(counts, position) end
  for i, e in ipairs(mine) do
    if e == emoji then table.remove(mine, i) break end
  end
end
remember_mutation(course, user, mutation)
if #counts == 0 then
  redis.call('HDEL', key, 'reactions')
else
  redis.call('HSET', key, 'reactions', cjson.encode(counts))
end
if #mine == 0 then
  redis.call('HDEL', reactors, user)
else
  redis.call('HSET', reactors, user, table.concat(mine, ' '))
end
follow_message_expiry(course, id)
log_change(course, adding and 'x' or 'y', id, user, 'e', emoji)
notify_change(course, ARGV[10])
return {'ok', '1', read_message(course, id, user)}
