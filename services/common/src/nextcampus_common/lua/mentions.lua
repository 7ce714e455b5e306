-- The newest messages of one course that mention a user, or the whole course: up to `limit`
-- from each of the two indexes, newest first (ListMyMentions merges the courses' answers).
-- KEYS: 1 the user's mention index, 2 the course's @course index
-- ARGV: 1 course key prefix, 2 user id, 3 the highest id to list (inclusive; '' for all),
--       4 limit
-- Returns {{record, ...}, {record, ...}}
local course, user, high, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
return {
  mention_records(course, KEYS[1], high, user, limit),
  mention_records(course, KEYS[2], high, user, limit),
}
