"""Test tooling of Next Campus Chat: the pytest plugin and the clients it hands out."""
