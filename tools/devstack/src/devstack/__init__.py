"""Local processes of Next Campus Chat (`make up`, the tests, the benchmarks)."""
