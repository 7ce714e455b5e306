-- Shared by the scripts that read or change messages (scripts.py puts it before them): the
-- message hash's fields, the keys beside a message, and the steps every change takes.
-- Every key is under the course's prefix `course:{<course id>}:`, so one slot, one node.

-- The message hash's fields in the order records carry them (keys.MESSAGE_FIELDS; a test
-- compares the two), and what a record says for a field the hash does not have.
local MESSAGE_FIELDS = {'user_id', 'content', 'timestamp', 'deleted', 'client_message_id',
  'prev_id', 'reply_to', 'edited_at', 'reply_count', 'last_reply_at', 'participants',
  'reactions', 'pinned_at', 'mentions', 'mentions_course', 'kind', 'resolved_at', 'endorsed_at',
  'endorsed_count', 'anonymous', 'pseudonym'}
local MESSAGE_DEFAULTS = {'', '', '0', '0', '', '', '', '0', '0', '0', '', '', '0', '', '', '',
  '0', '0', '0', '0', ''}
-- How long a client_mutation_id is remembered (a retry comes within seconds).
local MUTATION_TTL_MS = 86400000

local function now_millis()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function message_key(course, id) return course .. 'message:' .. id end
local function edits_key(course, id) return course .. 'edits:' .. id end
local function reactors_key(course, id) return course .. 'reactors:' .. id end
local function thread_key(course, id) return course .. 'thread:' .. id end
-- Read state (README, "Read state, unread counts and mentions"): user -> the newest message
-- id they have read; per user, the ids of the messages mentioning them; the ids of the
-- messages mentioning the whole course (@course).
local function reads_key(course) return course .. 'reads' end
local function mentioned_key(course, user) return course .. 'mentioned:' .. user end
local function mentioned_course_key(course) return course .. 'mentioned-course' end
-- Unread and mention counts are exact below this; COUNT_CAP means "this many or more"
-- (keys.COUNT_CAP says the same to Python).
local COUNT_CAP = 100

-- A message as a record {id, fields..., the viewer's reactions}, or nil when it is not
-- stored (expired). `viewer` '' (streams, shared by everyone): no viewer's reactions.
local function read_message(course, id, viewer)
  local h = redis.call('HMGET', message_key(course, id), unpack(MESSAGE_FIELDS))
  if not h[1] then return nil end
  local record = {id}
  for i = 1, #MESSAGE_FIELDS do record[i + 1] = h[i] or MESSAGE_DEFAULTS[i] end
  local mine = ''
  if viewer ~= '' and h[12] then
    mine = redis.call('HGET', reactors_key(course, id), viewer) or ''
  end
  record[#MESSAGE_FIELDS + 2] = mine
  return record
end

-- Make `key` live at least until `at` (ms). A key without expiry stays so: a pinned message
-- and what belongs to it never expire while pinned.
local function extend_expiry(key, at)
  local current = redis.call('PEXPIRETIME', key)
  if current ~= -1 and current < at then
    redis.call('PEXPIREAT', key, string.format('%.0f', at))
  end
end

-- Make `key` live at least until `at` (ms), a key just created (no expiry yet) too: for
-- keys that are never meant to live for ever (read markers, mention indexes).
local function expire_no_sooner(key, at)
  local current = redis.call('PEXPIRETIME', key)
  if current == -1 or current < at then
    redis.call('PEXPIREAT', key, string.format('%.0f', at))
  end
end

-- Anonymous to classmates (README, "Anonymous to classmates"): the author's pseudonym in the
-- course, stable while the course's salt lives (as long as its newest anonymous message may):
-- the first anonymous send stores `salt` (random, from the service), later ones reuse it.
-- Not a user id: user ids have no ':'. Only the service's answers to moderators undo it.
local function anonymous_salt_key(course) return course .. 'anonymous-salt' end

local function pseudonym_from(salt, user)
  return 'anonymous:' .. string.sub(redis.sha1hex(salt .. ':' .. user), 1, 8)
end

local function pseudonym_of(course, user, salt, expire_at)
  local key = anonymous_salt_key(course)
  redis.call('SET', key, salt, 'NX')
  expire_no_sooner(key, expire_at)
  return pseudonym_from(redis.call('GET', key), user)
end

-- Drop the ids of expired messages from the old end of an index of ids (at most `count`,
-- oldest first, until one is still kept): bounded work per write keeps indexes trim.
local function drop_expired_oldest(course, index, count)
  for _, old in ipairs(redis.call('ZRANGE', index, 0, count - 1)) do
    if redis.call('EXISTS', message_key(course, old)) == 1 then break end
    redis.call('ZREM', index, old)
  end
end

-- Give a message's own keys (its edits, its reactors, its thread index) the message's expiry.
local function follow_message_expiry(course, id)
  local at = redis.call('PEXPIRETIME', message_key(course, id))
  for _, key in ipairs({edits_key(course, id), reactors_key(course, id), thread_key(course, id)}) do
    if at == -1 then
      redis.call('PERSIST', key)
    elseif at > 0 then
      redis.call('PEXPIREAT', key, at)
    end
  end
end

-- GCRA: at most `count` per `seconds`, bursts up to `count`. Returns nil (allowed, and
-- recorded) or how many ms until it would be.
local function rate_limited(key, now_ms, count, seconds)
  if count <= 0 or seconds <= 0 then return nil end
  local window_ms = seconds * 1000
  local tat = tonumber(redis.call('GET', key)) or now_ms
  if tat < now_ms then tat = now_ms end
  local new_tat = tat + window_ms / count
  local allow_at = new_tat - window_ms
  if allow_at > now_ms then
    return string.format('%.0f', math.ceil(allow_at - now_ms))
  end
  redis.call('SET', key, string.format('%.0f', new_tat),
    'PX', string.format('%.0f', math.ceil(new_tat - now_ms)))
  return nil
end

-- The course's event log: one entry for this change, living as long as the message it names
-- (the send trims the log by the TTL; README, "Data model").
local function log_change(course, kind, id, actor, extra_field, extra_value)
  local log_key = course .. 'log'
  if extra_field then
    redis.call('XADD', log_key, '*', 'k', kind, 'i', id, 'u', actor, extra_field, extra_value)
  else
    redis.call('XADD', log_key, '*', 'k', kind, 'i', id, 'u', actor)
  end
  local at = redis.call('PEXPIRETIME', message_key(course, id))
  if at > 0 then
    extend_expiry(log_key, at)
  elseif redis.call('PEXPIRETIME', log_key) == -1 then
    -- A change of a pinned message (no expiry) in a log no send has bounded yet: the log
    -- is never kept for ever; the next send gives it the course TTL.
    redis.call('PEXPIRE', log_key, MUTATION_TTL_MS)
  end
end

-- A change that is not a new message or a tombstone: the channel only tells the course's
-- log tails to read the log (nextcampus_common/events.py, kind "n").
local function notify_change(course, course_id)
  redis.call('SPUBLISH', course .. 'events', cjson.encode({k = 'n', c = course_id}))
end

-- client_mutation_id: {'dup'} when this user's mutation with this id was applied before.
-- The write makes the WAIT after the script cover the first attempt's write too.
local function seen_mutation(course, user, mutation_id)
  if mutation_id == '' then return false end
  local key = course .. 'mutation:' .. user .. ':' .. mutation_id
  if redis.call('EXISTS', key) == 1 then
    redis.call('SET', key, '1', 'KEEPTTL')
    return true
  end
  return false
end

-- The reply to a retried mutation ({'dup', the message as it is now}), or nil when this one
-- was not applied before.
local function retried(course, id, user, mutation_id)
  if not seen_mutation(course, user, mutation_id) then return nil end
  local record = read_message(course, id, user)
  if record then return {'dup', record} end
  return {'not_found'}
end

local function remember_mutation(course, user, mutation_id)
  if mutation_id ~= '' then
    redis.call('SET', course .. 'mutation:' .. user .. ':' .. mutation_id, '1',
      'PX', MUTATION_TTL_MS)
  end
end

local function policy_number(policy, field, default)
  return tonumber(redis.call('HGET', policy, field)) or tonumber(default)
end

-- The mode the course's schedule puts it in at now_ms (README, "Course policies"): the
-- operator writes `schedule_segments` as disjoint, sorted `start-end:r` (read-only) or
-- `start-end:sN` (slow mode, N seconds) spans in UTC milliseconds (nextcampus_common/
-- schedule.py). Returns 'r', 's' or nil, the slow mode's seconds, and when the segment
-- ends (or the next begins). The scan stops at the first segment not yet over.
local function scheduled_mode(policy, now_ms)
  local text = redis.call('HGET', policy, 'schedule_segments')
  if not text then return nil, 0, nil end
  for from, to, mode, seconds in string.gmatch(text, '(%d+)%-(%d+):(%a)(%d*)') do
    from, to = tonumber(from), tonumber(to)
    if to > now_ms then
      if from <= now_ms then return mode, tonumber(seconds) or 0, to end
      return nil, 0, from
    end
  end
  return nil, 0, nil
end

-- Read-only: archived (`read_only`), or in a read-only window of the schedule. Returns
-- whether, and until when ('' for as long as the policy says so).
local function is_read_only(policy, now_ms)
  local value = redis.call('HGET', policy, 'read_only')
  if value == '1' or value == 'true' then return true, '' end
  local mode, _, until_ms = scheduled_mode(policy, now_ms or now_millis())
  if mode == 'r' then return true, string.format('%.0f', until_ms) end
  return false, ''
end

-- Questions (README, "Questions and endorsed answers"): a question's hash has kind = 'q';
-- the open and the resolved ones are listed by two sorted sets of ids (scored by id); the
-- endorsed answers by one (scored by when they were endorsed).
local function open_questions_key(course) return course .. 'questions:open' end
local function resolved_questions_key(course) return course .. 'questions:resolved' end
local function endorsed_key(course) return course .. 'endorsed' end

-- Whether a message is kept past the course TTL: pinned, an endorsed answer, or a question
-- with an endorsed answer.
local function kept(course, id)
  local h = redis.call('HMGET', message_key(course, id), 'pinned_at', 'endorsed_at',
    'endorsed_count')
  return (h[1] and h[1] ~= '0') or (h[2] and h[2] ~= '0')
    or (tonumber(h[3]) or 0) > 0
end

-- Whether any message of the course is kept past its TTL: the indexes listing them then do
-- not expire either.
local function course_keeps_any(course)
  return redis.call('ZCARD', course .. 'pins') > 0 or redis.call('ZCARD', endorsed_key(course)) > 0
end

-- A message no longer kept for one reason gets the course TTL from now, unless another
-- reason keeps it (pinned and endorsed); once the course keeps nothing, its indexes expire
-- again, not before any message they list.
local function release(course, id, ttl_seconds, now_ms)
  local at = string.format('%.0f', now_ms + ttl_seconds * 1000)
  if not kept(course, id) then
    redis.call('PEXPIREAT', message_key(course, id), at)
    follow_message_expiry(course, id)
  end
  if not course_keeps_any(course) then
    for _, index in ipairs({course .. 'messages', open_questions_key(course),
        resolved_questions_key(course)}) do
      if redis.call('PEXPIRETIME', index) == -1 then redis.call('PEXPIREAT', index, at) end
    end
  end
end

-- Keep a message (and what belongs to it) and the course's indexes for ever: while pinned
-- or endorsed, history and the question lists show it.
local function keep(course, id)
  redis.call('PERSIST', message_key(course, id))
  follow_message_expiry(course, id)
  for _, index in ipairs({course .. 'messages', open_questions_key(course),
      resolved_questions_key(course)}) do
    redis.call('PERSIST', index)
  end
end

-- Unpin a message: it (and what belongs to it) gets the course TTL from now unless an
-- endorsement keeps it (release).
local function unpin(course, id, ttl_seconds, now_ms)
  redis.call('HDEL', message_key(course, id), 'pinned_at')
  redis.call('ZREM', course .. 'pins', id)
  release(course, id, ttl_seconds, now_ms)
end

-- A page of the messages a sorted set of ids lists (the course index, a thread index),
-- skipping and removing ids whose messages expired: forward from `after` ('' for none,
-- then the newest before `before`), at most `limit` records and, past the first, at most
-- `max_bytes` of content. Returns the records oldest to newest, and whether more exist in
-- the paging direction.
local function page_of(index, course, after, before, limit, max_bytes, viewer)
  local forward = after ~= ''
  local low = forward and ('(' .. after) or '-inf'
  local high = before ~= '' and ('(' .. before) or '+inf'
  local records, found, bytes, has_more = {}, 0, 0, 0
  while found <= limit do
    local ids
    if forward then
      ids = redis.call('ZRANGEBYSCORE', index, low, high, 'LIMIT', 0, limit + 1 - found)
    else
      ids = redis.call('ZREVRANGEBYSCORE', index, high, low, 'LIMIT', 0, limit + 1 - found)
    end
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local record = read_message(course, id, viewer)
      if record then
        local size = #record[3]
        if found == limit or (found > 0 and bytes + size > max_bytes) then
          has_more = 1
          break
        end
        found = found + 1
        bytes = bytes + size
        records[found] = record
      else
        redis.call('ZREM', index, id)
      end
    end
    if has_more == 1 then break end
    if forward then low = '(' .. ids[#ids] else high = '(' .. ids[#ids] end
  end
  if not forward then
    local reversed = {}
    for i = found, 1, -1 do reversed[#reversed + 1] = records[i] end
    records = reversed
  end
  return records, has_more
end

-- How many messages a sorted set of ids lists after `marker` ('' for all) that are kept, not
-- deleted, not by `user`, and not in `except_key` (nil for none): exact up to `cap`, and
-- never more than 4 × cap entries looked at (deleted and expired ones cost a look each).
local function count_after(course, key, marker, user, cap, except_key)
  local low = marker == '' and '-inf' or ('(' .. marker)
  local found, looked = 0, 0
  while found < cap and looked < cap * 4 do
    local ids = redis.call('ZRANGEBYSCORE', key, low, '+inf', 'LIMIT', 0, cap)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local h = redis.call('HMGET', message_key(course, id), 'user_id', 'deleted')
      if h[1] and h[1] ~= user and h[2] ~= '1'
          and not (except_key and redis.call('ZSCORE', except_key, id)) then
        found = found + 1
        if found == cap then break end
      end
    end
    looked = looked + #ids
    low = '(' .. ids[#ids]
  end
  return found
end

-- Where `user` is in the course: {last read id, unread, mentions among them, the newest
-- message's timestamp (ms, '0' for none), its id}. Mentions are unread messages too.
local function read_state(course, user)
  local marker = redis.call('HGET', reads_key(course), user) or ''
  local unread = count_after(course, course .. 'messages', marker, user, COUNT_CAP)
  local mentions = 0
  if unread > 0 then
    local own = mentioned_key(course, user)
    mentions = count_after(course, own, marker, user, COUNT_CAP)
    if mentions < COUNT_CAP then
      mentions = mentions + count_after(course, mentioned_course_key(course), marker, user,
        COUNT_CAP - mentions, own)
    end
  end
  local newest = redis.call('ZREVRANGE', course .. 'messages', 0, 0)[1] or ''
  local newest_at = newest ~= '' and redis.call('HGET', message_key(course, newest), 'timestamp')
  -- The user's own pseudonym (only theirs): how their anonymous messages show to others.
  local salt = redis.call('GET', anonymous_salt_key(course))
  return {marker, unread, mentions, newest_at or '0', newest_at and newest or '',
    salt and pseudonym_from(salt, user) or ''}
end

-- The newest `limit` messages a mention index lists with ids up to `high` (inclusive; ''
-- for all), kept, not deleted and not by `user`, as records newest first; removes the ids
-- of expired messages.
local function mention_records(course, key, high, user, limit)
  local top = high == '' and '+inf' or high
  local records, looked = {}, 0
  while #records < limit and looked < limit * 4 do
    local ids = redis.call('ZREVRANGEBYSCORE', key, top, '-inf', 'LIMIT', 0, limit)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local record = read_message(course, id, user)
      if not record then
        redis.call('ZREM', key, id)
      elseif record[2] ~= user and record[5] ~= '1' then
        records[#records + 1] = record
        if #records == limit then break end
      end
    end
    looked = looked + #ids
    top = '(' .. ids[#ids]
  end
  return records
end
