"""Benchmarks of Next Campus Chat (`make bench`); their report code."""
