"""The chat service: in-process servers and real processes on real Redis Clusters.

Fixtures from the project's pytest plugin (`tools/testing/src/testing/plugin.py`, loaded
through its entry point): `redis_cluster`, `cluster_client`, `own_redis_cluster`,
`course_id`, `jwt_secret`, `make_token`, `topology`, `chat_settings_factory`, `chat_server`,
`client_for`, `graphql_server`, `signing_key`, `ec_key`, `jwks_file`."""
