"""The local processes: real redis-servers, supervision.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `own_redis_cluster`."""
