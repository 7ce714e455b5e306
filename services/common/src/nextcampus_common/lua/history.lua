-- A page of history through the index, skipping (and removing) entries whose message
-- expired. With an `after` bound the page runs forward from it; otherwise it is the newest
-- messages before `before`. A page holds at most `limit` messages and, past its first,
-- at most `max_bytes` of content. Records come back oldest to newest.
--
-- Resuming after a message that a failover lost: when `after` is a retracted tombstone
-- (retract.lua), the page starts with the run of tombstones retracted with it; when `after`
-- is not stored (handed out by a primary that failed before any replica had it, and not
-- retracted yet) but is not past the clock nor older than what expired, with a tombstone
-- made up for it. Either way their prev_id is the newest message that survived before
-- them: the reader resumes after that one.
--
-- With the page, the newest cursor of the course's event log (send.lua) as it is now: the
-- reader continues with ListEvents after it and misses no change (read in this script, so
-- nothing can come between the page and the cursor).
--
-- KEYS: 1 index, 2 seq, 3 event log
-- ARGV: 1 message key prefix, 2 after id or '', 3 before id or '', 4 limit, 5 max bytes
-- Returns {has_more, event cursor or '', id, user_id, content, timestamp, deleted,
-- client_message_id, prev_id, id, ...}, or {'ahead', newest id} when `after` is past the
-- clock.
local index_key, seq_key, log_key, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local forward = ARGV[2] ~= ''
local low = forward and ('(' .. ARGV[2]) or '-inf'
local high = ARGV[3] ~= '' and ('(' .. ARGV[3]) or '+inf'
local limit, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
-- Ids of different Redis nodes' clocks: allow for their difference.
local CLOCK_SLACK_US = 60000000
local RETRACTED_RUN_LIMIT = 1000
local FIELDS = {'user_id', 'content', 'timestamp', 'deleted', 'client_message_id', 'prev_id'}

local function record(id, h)
  return {id, h[1], h[2], h[3], h[4] or '0', h[5] or '', h[6] or ''}
end

local out = {0, ''}
if forward then
  local after = ARGV[2]
  local h = redis.call('HMGET', prefix .. after, 'user_id', 'retracted')
  if h[1] and h[2] == '1' then
    local run = {}
    local ids = redis.call('ZREVRANGEBYSCORE', index_key, after, '-inf',
      'LIMIT', 0, RETRACTED_RUN_LIMIT)
    for _, id in ipairs(ids) do
      local r = redis.call('HMGET', prefix .. id, 'retracted', unpack(FIELDS))
      if r[1] ~= '1' then break end
      table.remove(r, 1)
      table.insert(run, 1, record(id, r))
    end
    for _, rec in ipairs(run) do
      for _, v in ipairs(rec) do out[#out + 1] = v end
    end
  elseif not h[1] then
    -- `after` is not stored. Past the newest id it was lost (or is made up); below it, it
    -- was lost if a message before it is still there (messages expire oldest first).
    local survivor = nil
    local newest = redis.call('GET', seq_key) or ''
    if tonumber(after) > (tonumber(newest) or 0) then
      local t = redis.call('TIME')
      if tonumber(after) > tonumber(t[1]) * 1000000 + tonumber(t[2]) + CLOCK_SLACK_US then
        return {'ahead', newest}
      end
      survivor = newest
    else
      local before = redis.call('ZREVRANGEBYSCORE', index_key, '(' .. after, '-inf', 'LIMIT', 0, 1)
      if before[1] and redis.call('EXISTS', prefix .. before[1]) == 1 then
        survivor = before[1]
      end
    end
    if survivor then
      local timestamp = string.format('%.0f', math.floor(tonumber(after) / 1000))
      for _, v in ipairs({after, '', '', timestamp, '1', '', survivor}) do out[#out + 1] = v end
    end
  end
end

local records, found, bytes, has_more = {}, 0, 0, 0
while found <= limit do
  local ids
  if forward then
    ids = redis.call('ZRANGEBYSCORE', index_key, low, high, 'LIMIT', 0, limit + 1 - found)
  else
    ids = redis.call('ZREVRANGEBYSCORE', index_key, high, low, 'LIMIT', 0, limit + 1 - found)
  end
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', prefix .. id, unpack(FIELDS))
    if h[1] then
      if found == limit or (found > 0 and bytes + #h[2] > max_bytes) then
        has_more = 1
        break
      end
      found = found + 1
      bytes = bytes + #h[2]
      records[found] = record(id, h)
    else
      redis.call('ZREM', index_key, id)
    end
  end
  if has_more == 1 then break end
  if forward then low = '(' .. ids[#ids] else high = '(' .. ids[#ids] end
end

out[1] = has_more
local newest_event = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)
if newest_event[1] then out[2] = newest_event[1][1] end
local first, last, step = 1, found, 1
if not forward then first, last, step = found, 1, -1 end
for i = first, last, step do
  for _, v in ipairs(records[i]) do out[#out + 1] = v end
end
return out
