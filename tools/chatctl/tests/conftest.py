"""The CLI as a user runs it: processes, and its wheels outside a checkout.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `redis_cluster`, `cluster_client`, `course_id`, `make_token`,
`chat_server`, `client_for`."""
