-- Messages by id for one viewer (their own reactions in each record): one message, or the
-- course's pinned messages (most recently pinned first) when no id is given.
-- KEYS: 1 pins
-- ARGV: 1 course key prefix, 2 viewer's user id, 3 message id or '' (the pinned ones)
-- Returns {record, ...} (none when the message is not stored)
local course, viewer = ARGV[1], ARGV[2]
local ids = {ARGV[3]}
if ARGV[3] == '' then ids = redis.call('ZREVRANGE', KEYS[1], 0, -1) end
local out = {}
for _, id in ipairs(ids) do
  local record = read_message(course, id, viewer)
  if record then out[#out + 1] = record end
end
return out
