-- A batch of a course's export (nextcampus_common/export.py): the messages the course index
-- lists after `after`, oldest first, each with what belongs to it — its earlier versions
-- (edits) and who reacted with what. Read-only: an id whose message expired is passed over,
-- not removed (history.lua and the sends trim the index), and at most 4 × `limit` ids are
-- looked at, so a course whose index holds many expired ids still costs a bounded call.
-- A batch holds at most `limit` messages and, past its first, at most `max_bytes` of
-- content and earlier contents.
--
-- KEYS: 1 index
-- ARGV: 1 course key prefix, 2 after id ('' from the start), 3 limit, 4 max bytes
-- Returns {has_more 0|1, the last id looked at ('' for none), {record, versions, reactors},
-- ...}: records as read_message makes them (no viewer), versions the edits list as stored
-- (JSON {b, t}, oldest first), reactors the flat HGETALL of user -> space-separated emoji.
local index, course = KEYS[1], ARGV[1]
local low = ARGV[2] == '' and '-inf' or ('(' .. ARGV[2])
local limit, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {0, ''}
local found, looked, bytes = 0, 0, 0
while looked < limit * 4 do
  local ids = redis.call('ZRANGEBYSCORE', index, low, '+inf', 'LIMIT', 0, limit + 1 - found)
  if #ids == 0 then return out end
  for _, id in ipairs(ids) do
    local record = read_message(course, id, '')
    if record then
      local versions = redis.call('LRANGE', edits_key(course, id), 0, -1)
      local size = #record[3]
      for _, version in ipairs(versions) do size = size + #version end
      if found == limit or (found > 0 and bytes + size > max_bytes) then
        out[1] = 1
        return out
      end
      found = found + 1
      bytes = bytes + size
      out[#out + 1] = {record, versions, redis.call('HGETALL', reactors_key(course, id))}
    end
    looked = looked + 1
    out[2] = id
  end
  low = '(' .. ids[#ids]
end
-- Looked at enough for one call (many expired ids): the caller goes on after out[2].
out[1] = 1
return out
