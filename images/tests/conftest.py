"""The images, checked offline with the real uv (no Docker engine here).

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): none."""
