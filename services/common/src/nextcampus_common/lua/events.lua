-- A page of the course's event log after a cursor, each event with its message as it is now
-- (README, "Data model"). Entries whose message expired are skipped: expiry is not a change.
--
-- A cursor older than what the log still keeps (entries after it were trimmed with the
-- TTL) cannot be answered exactly: {'stale', oldest cursor kept}. A cursor past the clock
-- was never handed out: {'ahead'}. A cursor past the log's newest entry but not past the
-- clock (the newest entries were lost in a failover) gets what comes after it, and the
-- page says that the cursor is not in the log (`after_lost`: a log tail that passed on the
-- entries a failover lost then restores their messages, relog.lua).
--
-- KEYS: 1 event log
-- ARGV: 1 course key prefix, 2 cursor or '' (from the start), 3 limit, 4 max bytes of
--       content in a page past its first event
-- Returns {has_more, after_lost, {cursor, kind, actor, emoji or '', record, root record or
--   {}}, ...}
--   | {'stale', oldest} | {'ahead'}
-- (records as read_message makes them, for no viewer: a stream's bytes are everyone's; the
-- root is there for an added reply and an endorsement's answer, as it is now.)
local log_key, course, after, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
-- Cursors of different Redis nodes' clocks: allow for their difference (as history.lua).
local CLOCK_SLACK_MS = 60000

local function millis(cursor)
  return tonumber(string.match(cursor, '^(%d+)'))
end

if after ~= '' then
  local t = redis.call('TIME')
  if millis(after) > tonumber(t[1]) * 1000 + CLOCK_SLACK_MS then
    return {'ahead'}
  end
end
if redis.call('EXISTS', log_key) == 0 then
  return {0, after ~= '' and 1 or 0}
end
if after ~= '' then
  -- Entries leave only by trimming, oldest first: once any left, a cursor before the oldest
  -- kept may have missed some. (A cursor at exactly the newest trimmed entry is refused too:
  -- reloading is harmless.)
  local info = redis.call('XINFO', 'STREAM', log_key)
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  local first = fields['first-entry'] and fields['first-entry'][1]
  if first and tonumber(fields['entries-added']) > tonumber(fields['length']) then
    local a_ms, a_seq = string.match(after, '^(%d+)-(%d+)$')
    local f_ms, f_seq = string.match(first, '^(%d+)-(%d+)$')
    a_ms, a_seq, f_ms, f_seq = tonumber(a_ms), tonumber(a_seq), tonumber(f_ms), tonumber(f_seq)
    if a_ms < f_ms or (a_ms == f_ms and a_seq < f_seq) then
      return {'stale', first}
    end
  end
end

local start = after ~= '' and ('(' .. after) or '-'
local entries = redis.call('XRANGE', log_key, start, '+', 'COUNT', limit + 1)
local lost = 0
if after ~= '' and #redis.call('XRANGE', log_key, after, after) == 0 then lost = 1 end
local out = {0, lost}
local count, bytes = 0, 0
for _, entry in ipairs(entries) do
  if count == limit then
    out[1] = 1
    break
  end
  local fields = {}
  for i = 1, #entry[2], 2 do fields[entry[2][i]] = entry[2][i + 1] end
  local record = read_message(course, fields.i, '')
  if record then
    bytes = bytes + #record[3]
    if count > 0 and bytes > max_bytes then
      out[1] = 1
      break
    end
    count = count + 1
    -- The thread's root of an added reply, and the question of an endorsement (its
    -- endorsed_count changed with it): as they are now.
    local root = {}
    if (fields.k == 'a' or fields.k == 'g' or fields.k == 'h') and record[8] ~= '' then
      root = read_message(course, record[8], '') or {}
    end
    out[#out + 1] = {entry[1], fields.k, fields.u, fields.e or '', record, root}
  end
end
return out
