-- A page of history through the index, skipping (and removing) entries whose message
-- expired. With an `after` bound the page runs forward from it; otherwise it is the newest
-- `limit` messages before `before`. Records come back oldest to newest.
-- KEYS: 1 index
-- ARGV: 1 message key prefix, 2 after id or '', 3 before id or '', 4 limit
-- Returns {has_more, id, user_id, content, timestamp, deleted, client_message_id, id, ...}
local index_key, prefix = KEYS[1], ARGV[1]
local forward = ARGV[2] ~= ''
local low = forward and ('(' .. ARGV[2]) or '-inf'
local high = ARGV[3] ~= '' and ('(' .. ARGV[3]) or '+inf'
local limit = tonumber(ARGV[4])
local records, found, has_more = {}, 0, 0

while found <= limit do
  local ids
  if forward then
    ids = redis.call('ZRANGEBYSCORE', index_key, low, high, 'LIMIT', 0, limit + 1 - found)
  else
    ids = redis.call('ZREVRANGEBYSCORE', index_key, high, low, 'LIMIT', 0, limit + 1 - found)
  end
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', prefix .. id,
      'user_id', 'content', 'timestamp', 'deleted', 'client_message_id')
    if h[1] then
      if found == limit then
        has_more = 1
        break
      end
      found = found + 1
      records[found] = {id, h[1], h[2], h[3], h[4] or '0', h[5] or ''}
    else
      redis.call('ZREM', index_key, id)
    end
  end
  if has_more == 1 then break end
  if forward then low = '(' .. ids[#ids] else high = '(' .. ids[#ids] end
end

local out = {has_more}
local first, last, step = 1, found, 1
if not forward then first, last, step = found, 1, -1 end
for i = first, last, step do
  for _, v in ipairs(records[i]) do out[#out + 1] = v end
end
return out
