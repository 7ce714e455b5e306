"""The app factory of a chat process: `build_server(settings)` wires everything once."""

from __future__ import annotations

import asyncio
import signal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from nextcampus_chat.feed import FeedHub
from nextcampus_chat.metrics import ChatMetrics
from nextcampus_chat.service import ChatService, add_to_server
from nextcampus_chat.settings import ChatSettings
from nextcampus_chat.store import MessageStore
from nextcampus_common.auth import TokenVerifier
from nextcampus_common.chat_api import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from nextcampus_common.logs import get_logger
from nextcampus_common.metrics import serve_metrics
from nextcampus_common.proto.chat.v1 import chat_pb2
from nextcampus_common.redis_cluster import ClusterClient
from nextcampus_common.runtime import settle_heap

log = get_logger(__name__)

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name


class ChatServer:
    """A running chat process: gRPC server, Redis client, fan-out hub, /metrics."""

    def __init__(self, settings: ChatSettings, metrics: ChatMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ChatMetrics()
        self.metrics.hops.enabled = settings.hop_timing
        self.redis = ClusterClient(
            settings, on_error=lambda kind: self.metrics.redis_errors.labels(kind).inc()
        )
        self.store = MessageStore(self.redis, settings)
        self.hub = FeedHub(
            self.redis,
            self.store,
            self.metrics,
            queue_size=settings.stream_queue_size,
            queue_bytes=settings.stream_queue_bytes,
            page_limit=settings.history_page_limit,
        )
        self.health = health_aio.HealthServicer()
        self.grpc = grpc.aio.server(
            options=[
                # Content is capped at 16,000 characters (64 KB of UTF-8): a larger request
                # is abuse. Responses stay within what every client of ours accepts.
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                ("grpc.so_reuseport", 0),
                # Streams live long behind load balancers: keep them alive, notice dead peers.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        add_to_server(
            ChatService(settings, self.store, self.hub, TokenVerifier(settings), self.metrics),
            self.grpc,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.grpc,
        )
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopping = False
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        await self.redis.start()
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = self.grpc.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind gRPC to {address}")
        await self.grpc.start()
        self.metrics_port = serve_metrics(
            self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("chat serving", grpc_port=self.port, metrics_port=self.metrics_port)
        return self.port

    async def stop(self) -> None:
        """Graceful: not ready, end streams (clients resume elsewhere with after_message_id),
        let unary calls finish within the grace period, then close Redis."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        await self.hub.close()
        await self.grpc.stop(self.settings.shutdown_grace_seconds)
        await self.redis.close()
        self._stopped.set()
        log.info("chat stopped")

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
        await self.start()
        settle_heap(self.settings)
        print("ready", flush=True)
        await self._stopped.wait()


def build_server(settings: ChatSettings, metrics: ChatMetrics | None = None) -> ChatServer:
    return ChatServer(settings, metrics)
