"""The WebSockets a GraphQL process holds, and what changes while it serves: which sockets are
open, the close handshakes still running, and whether new sockets are accepted (no longer
once it shuts down). Fixed things are the wiring's (`wiring.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nextcampus_graphql.connection import Connection


@dataclass(eq=False)
class SocketRegistry:
    connections: set[Connection] = field(default_factory=set)
    # Close handshakes run past their socket's reader: shutdown waits for them.
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    accepting: bool = True

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    @contextmanager
    def holding(self, connection: Connection) -> Iterator[None]:
        self.connections.add(connection)
        try:
            yield
        finally:
            self.connections.discard(connection)

    def keepalive(self) -> None:
        for connection in list(self.connections):
            connection.keepalive()

    def close_all(self, code: int, reason: str) -> None:
        """Accept no new socket and close every open one with `code`."""
        self.accepting = False
        for connection in list(self.connections):
            connection.close(code, reason)

    async def wait_for_closes(self, timeout_seconds: float) -> None:
        if self.background:
            await asyncio.wait(list(self.background), timeout=timeout_seconds)
