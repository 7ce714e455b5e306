"""The kind e2e script and its values, checked offline.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): none."""
