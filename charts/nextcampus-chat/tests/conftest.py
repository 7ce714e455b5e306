"""The chart: rendered by the real helm, checked by kubernetes-validate, Envoy, promtool and
real redis-servers.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `jwks_file`, `kube`."""
