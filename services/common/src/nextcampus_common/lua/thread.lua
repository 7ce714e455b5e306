-- A page of a thread: its root (a tombstone when deleted: the thread stays readable) and
-- its replies, oldest to newest, paged like history (`after` forward, else the newest before
-- `before`; at most `limit`, and past the first at most `max_bytes` of content).
-- KEYS: none (the thread index is found from the root)
-- ARGV: 1 course key prefix, 2 root or reply id, 3 after id or '', 4 before id or '',
--       5 limit, 6 max bytes, 7 viewer's user id
-- Returns {'not_found'} | {has_more, root record, reply record, ...}
local course, id, viewer = ARGV[1], ARGV[2], ARGV[7]
local limit, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])

local reply_to = redis.call('HGET', message_key(course, id), 'reply_to')
if reply_to and reply_to ~= '' then id = reply_to end
local root = read_message(course, id, viewer)
if not root then return {'not_found'} end
local records, has_more = page_of(thread_key(course, id), course, ARGV[3], ARGV[4], limit,
  max_bytes, viewer)
local out = {has_more, root}
for _, record in ipairs(records) do out[#out + 1] = record end
return out
