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
-- ARGV: 1 course key prefix, 2 after id or '', 3 before id or '', 4 limit, 5 max bytes,
--       6 the viewer's user id (their own reactions in each record)
-- Returns {has_more, event cursor or '', record, record, ...} (records as read_message
-- makes them), or {'ahead', newest id} when `after` is past the clock.
local index_key, seq_key, log_key, course = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local prefix = course .. 'message:'
local forward = ARGV[2] ~= ''
local limit, max_bytes, viewer = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
-- Ids of different Redis nodes' clocks: allow for their difference.
local CLOCK_SLACK_US = 60000000
local RETRACTED_RUN_LIMIT = 1000

local out = {0, ''}
if forward then
  local after = ARGV[2]
  local h = redis.call('HMGET', prefix .. after, 'user_id', 'retracted')
  if h[1] and h[2] == '1' then
    local run = {}
    local ids = redis.call('ZREVRANGEBYSCORE', index_key, after, '-inf',
      'LIMIT', 0, RETRACTED_RUN_LIMIT)
    for _, id in ipairs(ids) do
      if redis.call('HGET', prefix .. id, 'retracted') ~= '1' then break end
      local record = read_message(course, id, '')
      if record then table.insert(run, 1, record) end
    end
    for _, record in ipairs(run) do out[#out + 1] = record end
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
      local record = {after}
      for i = 1, #MESSAGE_FIELDS do record[i + 1] = MESSAGE_DEFAULTS[i] end
      record[4] = string.format('%.0f', math.floor(tonumber(after) / 1000))
      record[5] = '1'
      record[7] = survivor
      record[#MESSAGE_FIELDS + 2] = ''
      out[#out + 1] = record
    end
  end
end

local records, has_more = page_of(index_key, course, ARGV[2], ARGV[3], limit, max_bytes, viewer)

out[1] = has_more
local newest_event = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)
if newest_event[1] then out[2] = newest_event[1][1] end
for _, record in ipairs(records) do out[#out + 1] = record end
return out
