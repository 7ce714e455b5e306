-- The course's questions (README, "Questions and endorsed answers"), the newest first,
-- skipping (and removing from the indexes) questions that expired or were deleted.
-- KEYS: 1 open questions, 2 resolved questions
-- ARGV: 1 course key prefix, 2 viewer's user id, 3 mode:
--   'page': 4 'open' | 'resolved' | 'all', 5 after (a question id, exclusive) or '',
--           6 limit. Returns {has_more 0|1, record, ...}
--   'texts': 4 how many of the newest questions (open and resolved). Returns
--           {id, content, ...} (what similarQuestions compares)
--   'records': 4.. question ids. Returns {record, ...} (those still kept, in that order)
local course, viewer, mode = ARGV[1], ARGV[2], ARGV[3]

-- Up to `n` kept, not deleted questions of `index` with ids below `high` (exclusive; '' for
-- all), newest first, as {id, content}; and whether more may exist. Looks at no more than
-- 4 × n + 8 entries, removing the ids it skips: a later call goes further.
local function newest(index, high, n)
  local top = high == '' and '+inf' or ('(' .. high)
  local found, looked, more = {}, 0, false
  while #found < n do
    if looked > 4 * n + 8 then more = true break end
    local ids = redis.call('ZREVRANGEBYSCORE', index, top, '-inf', 'LIMIT', 0, n + 1 - #found)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      looked = looked + 1
      local h = redis.call('HMGET', message_key(course, id), 'content', 'deleted')
      if not h[1] or h[2] == '1' then
        redis.call('ZREM', index, id)
      else
        found[#found + 1] = {id, h[1]}
      end
    end
    top = '(' .. ids[#ids]
  end
  if #found > n then
    more = true
    found[n + 1] = nil
  end
  return found, more
end

-- Two lists newest first, merged, at most `n`; whether either had more.
local function merged(a, more_a, b, more_b, n)
  local out, i, j = {}, 1, 1
  while #out < n and (a[i] or b[j]) do
    if not b[j] or (a[i] and tonumber(a[i][1]) > tonumber(b[j][1])) then
      out[#out + 1] = a[i]
      i = i + 1
    else
      out[#out + 1] = b[j]
      j = j + 1
    end
  end
  return out, more_a or more_b or a[i] ~= nil or b[j] ~= nil
end

if mode == 'page' then
  local state, after, limit = ARGV[4], ARGV[5], tonumber(ARGV[6])
  local found, more
  if state == 'open' then
    found, more = newest(KEYS[1], after, limit)
  elseif state == 'resolved' then
    found, more = newest(KEYS[2], after, limit)
  else
    local a, more_a = newest(KEYS[1], after, limit)
    local b, more_b = newest(KEYS[2], after, limit)
    found, more = merged(a, more_a, b, more_b, limit)
  end
  local out = {more and 1 or 0}
  for _, entry in ipairs(found) do out[#out + 1] = read_message(course, entry[1], viewer) end
  return out
elseif mode == 'texts' then
  local n = tonumber(ARGV[4])
  local a, more_a = newest(KEYS[1], '', n)
  local b, more_b = newest(KEYS[2], '', n)
  local found = merged(a, more_a, b, more_b, n)
  local out = {}
  for _, entry in ipairs(found) do
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2]
  end
  return out
end
local out = {}
for i = 4, #ARGV do
  local record = read_message(course, ARGV[i], viewer)
  if record then out[#out + 1] = record end
end
return out
