"""The benchmarks' summaries, with made-up numbers.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): none."""
