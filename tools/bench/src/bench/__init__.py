"""Benchmarks of Next Campus Chat (`make bench`): the scenarios in `chat`, `fanout` and
`retime`; what they share in `measure` (CPU time and the machine, from /proc), `stats`
(the summarizers, unit-tested) and `report` (tables, progress lines, the results file)."""
