"""`python -m nextcampus_graphql`: one GraphQL process, configured by NEXTCAMPUS_* env vars."""

from __future__ import annotations

import asyncio
import signal

import uvloop
from aiohttp import web

from nextcampus_common.logs import configure_logging, get_logger
from nextcampus_common.runtime import settle_heap
from nextcampus_common.settings import load_settings
from nextcampus_graphql.app import create_app
from nextcampus_graphql.settings import GraphqlSettings

log = get_logger(__name__)


async def serve(settings: GraphqlSettings) -> None:
    runner = web.AppRunner(
        create_app(settings),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("graphql serving", http_port=settings.http_port, chat_target=settings.chat_target)
    settle_heap(settings)
    print("ready", flush=True)
    await stop.wait()
    log.info("graphql stopping")
    await runner.cleanup()
    log.info("graphql stopped")


def main() -> None:
    settings = load_settings(GraphqlSettings, "graphql")
    configure_logging(settings.log_level, settings.log_format)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
