"""The common package against real Redis Clusters and JWKS servers.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `signing_key`, `ec_key`, `jwks_server`."""
