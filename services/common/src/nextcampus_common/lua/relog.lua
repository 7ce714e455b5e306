-- Restore what a failover undid after streams had carried it: a log tail passes the entries
-- it sent recently; for each one no longer in the log (lost with the primary that had it,
-- never acknowledged), the message it named gets a new entry 'c' (MESSAGE_RESTORED: the
-- message as the store keeps it now), once for all processes (the `relogged` set remembers
-- the lost cursors for a day). Added messages that were lost are retracted by retract.lua.
-- KEYS: 1 event log, 2 relogged set
-- ARGV: 1 course key prefix, 2 course id, then cursor, message id, cursor, message id, ...
-- Returns how many entries this call added.
local log_key, relogged, course = KEYS[1], KEYS[2], ARGV[1]
local restore, order = {}, {}
for i = 3, #ARGV, 2 do
  local cursor, id = ARGV[i], ARGV[i + 1]
  if #redis.call('XRANGE', log_key, cursor, cursor) == 0
      and redis.call('SADD', relogged, cursor) == 1 and not restore[id] then
    restore[id] = true
    order[#order + 1] = id
  end
end
redis.call('PEXPIRE', relogged, MUTATION_TTL_MS)
local added = 0
for _, id in ipairs(order) do
  -- Only a message still stored: an entry naming nothing would keep the log alive.
  if redis.call('EXISTS', message_key(course, id)) == 1 then
    log_change(course, 'c', id, '')
    added = added + 1
  end
end
if added > 0 then notify_change(course, ARGV[2]) end
return added
