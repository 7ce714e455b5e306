"""`python -m nextcampus_chat`: one chat process, configured by NEXTCAMPUS_* env vars."""

from __future__ import annotations

import asyncio

from nextcampus_chat.server import build_server
from nextcampus_chat.settings import ChatSettings
from nextcampus_common.logs import configure_logging
from nextcampus_common.settings import load_settings


def main() -> None:
    settings = load_settings(ChatSettings, "chat")
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


async def serve(settings: ChatSettings) -> None:
    # grpc.aio binds its server to the loop that is running when it is built.
    await build_server(settings).run_until_signal()


if __name__ == "__main__":
    main()
