-- One user's read state in one course (lib/course.lua read_state); GetMyCourses runs it for
-- every course of the caller, pipelined per Redis node.
-- KEYS: 1 the course's read markers
-- ARGV: 1 course key prefix, 2 user id
return read_state(ARGV[1], ARGV[2])
