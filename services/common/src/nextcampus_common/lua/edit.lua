-- Edit a message: its author only, while the course's edit window is open, with the send's
-- content rules. The content it replaces is kept with the message (its edits list, as long
-- as the message lives) for its author and the course's moderators.
-- KEYS: 1 message key, 2 policy, 3 events channel, 4 event log, 5 edits list, 6 action rate
-- ARGV: 1 course key prefix, 2 message id, 3 user id, 4 content, 5 client mutation id or '',
--       6 default edit window seconds, 7 default max length, 8 action rate count,
--       9 action rate seconds, 10 course id
-- Returns {'ok', changed 0|1, record} | {'dup', record} | {'not_found'} | {'deleted'}
--   | {'forbidden'} | {'read_only'} | {'edits_disabled'} | {'too_late', window seconds}
--   | {'too_long', max length} | {'rate_limited', retry after ms}
local key, policy = KEYS[1], KEYS[2]
local course, id, user, content, mutation = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local again = retried(course, id, user, mutation)
if again then return again end
local h = redis.call('HMGET', key, 'user_id', 'deleted', 'timestamp', 'content', 'edited_at')
if not h[1] then return {'not_found'} end
if h[2] == '1' then return {'deleted'} end
if h[1] ~= user then return {'forbidden'} end
local read_only, read_only_until = is_read_only(policy)
if read_only then return {'read_only', read_only_until} end
local window = policy_number(policy, 'edit_window_seconds', ARGV[6])
if window <= 0 then return {'edits_disabled'} end
local now_ms = now_millis()
if now_ms > tonumber(h[3]) + window * 1000 then return {'too_late', window} end
local max_length = policy_number(policy, 'max_length', ARGV[7])
local _, length = string.gsub(content, '[^\128-\191]', '')
if length > max_length then return {'too_long', max_length} end
local retry_after = rate_limited(KEYS[6], now_ms, tonumber(ARGV[8]), tonumber(ARGV[9]))
if retry_after then return {'rate_limited', retry_after} end

remember_mutation(course, user, mutation)
if content == h[4] then
  -- Nothing changes (a write all the same, for the WAIT: see seen_mutation).
  redis.call('HSET', key, 'content', content)
  return {'ok', '0', read_message(course, id, user)}
end
local written_at = (h[5] and h[5] ~= '0') and h[5] or h[3]
redis.call('RPUSH', KEYS[5], cjson.encode({b = h[4], t = written_at}))
local now = string.format('%.0f', now_ms)
redis.call('HSET', key, 'content', content, 'edited_at', now)
follow_message_expiry(course, id)
log_change(course, 'e', id, user)
notify_change(course, ARGV[10])
return {'ok', '1', read_message(course, id, user)}
