"""The one gRPC client of ChatService (GraphQL pods, chatctl, tests): round-robin over every
pod the target resolves to, deadlines, and gRPC's own retries of UNAVAILABLE (every change
carries a client id — a send its client message id, the others a client mutation id — so a
retried change is never applied twice). The caller's token goes with each call: one channel
serves many users."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Literal

import grpc

from nextcampus_common.hops import HopClock
from nextcampus_common.metadata import (
    AUTHORIZATION,
    STREAM_AFTER_CURSOR,
    STREAM_AFTER_MESSAGE_ID,
    metadata_value,
)
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc
from nextcampus_common.send_streams import SendStreams

# The largest gRPC message either side sends, set on both ends rather than left to gRPC's
# defaults (4 MiB to receive, unlimited to send): a history page is cut by bytes well below
# it (chat's history_page_bytes), and a request carries at most 16,000 characters.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_REQUEST_BYTES = 256 * 1024
# Leaves one PresenceHeartbeat may carry (departed_user_ids): the chat service refuses more.
MAX_DEPARTED_PER_HEARTBEAT = 1000


def service_config(max_attempts: int) -> str:
    retry = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{"name": [{"service": "chat.v1.ChatService"}], "retryPolicy": retry}]
            if max_attempts > 1
            else [],
        }
    )


def client_id(given: str | None) -> str:
    """The caller's idempotency key of a change, or a fresh one: our own retries (and the
    client's) must not apply a change twice."""
    return given or f"auto-{uuid.uuid4().hex}"


async def _live_header(call: grpc.aio.UnaryStreamCall, key: str) -> str:
    """The header a stream sends once it is live. A stream refused before that (a bad or
    stale cursor, a course the caller is not in) raises its status, as reading it would."""
    value = metadata_value(await call.initial_metadata(), key)
    if value is None:
        async for _ in call:  # ended without the header: its error, if it has one
            break
        raise RuntimeError(f"the chat service sent no {key} header")
    return value


async def stream_live_after(call: grpc.aio.UnaryStreamCall) -> int:
    """Wait until a SubscribeMessages stream is live; the id it carries every message after."""
    return int(await _live_header(call, STREAM_AFTER_MESSAGE_ID))


async def stream_live_cursor(call: grpc.aio.UnaryStreamCall) -> str:
    """Wait until a SubscribeEvents stream is live; the cursor it carries every change after
    ("": every change, the log was empty)."""
    return await _live_header(call, STREAM_AFTER_CURSOR)


class ChatApi:
    def __init__(
        self,
        target: str,
        *,
        deadline_seconds: float = 10.0,
        max_attempts: int = 4,
        options: list[tuple[str, int | str]] | None = None,
        send_streams: int = 0,
        hops: HopClock | None = None,
    ) -> None:
        """`send_streams`: sends go over that many SendMessages streams (send_streams.py)
        rather than as one SendMessage call each (0)."""
        self.target = target
        self._deadline = deadline_seconds
        self._hops = hops
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                # The caller's first: of two values for one option, gRPC takes the first.
                *(options or []),
                ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
                ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
                ("grpc.service_config", service_config(max_attempts)),
                ("grpc.enable_retries", 1),
                # Notice a chat pod that vanished without closing its connections.
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # Re-resolve the headless service soon after a pod goes away.
                ("grpc.dns_min_time_between_resolutions_ms", 1_000),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )
        self._stub = chat_pb2_grpc.ChatServiceStub(self.channel)
        self._send_streams = (
            SendStreams(self._stub, self._unary_send, count=send_streams, max_attempts=max_attempts)
            if send_streams
            else None
        )

    async def close(self) -> None:
        if self._send_streams is not None:
            self._send_streams.close()
        await self.channel.close()

    async def ready(self) -> bool:
        """True when at least one chat pod is connected (or can be connected to now)."""
        state = self.channel.get_state(try_to_connect=True)
        return state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE)

    @staticmethod
    def _metadata(token: str) -> tuple[tuple[str, str]]:
        return ((AUTHORIZATION, f"Bearer {token}"),)

    async def send(
        self,
        token: str,
        course_id: str,
        content: str,
        client_message_id: str | None = None,
        *,
        reply_to: str | None = None,
        question: bool = False,
        anonymous: bool = False,
        deadline_seconds: float | None = None,
    ) -> chat_pb2.SendMessageResponse:
        request = chat_pb2.SendMessageRequest(
            course_id=course_id,
            content=content,
            client_message_id=client_id(client_message_id),
            reply_to_message_id=reply_to or "",
            kind=chat_pb2.MESSAGE_KIND_QUESTION if question else chat_pb2.MESSAGE_KIND_UNSPECIFIED,
            anonymous=anonymous,
        )
        deadline = deadline_seconds or self._deadline
        if self._hops is not None:
            self._hops.passed("graphql_mutation", content)
        if self._send_streams is not None:
            response = await self._send_streams.send(token, request, deadline)
        else:
            response = await self._unary_send(request, token, deadline)
        if self._hops is not None:
            self._hops.passed("graphql_acknowledged", content)
        return response

    async def _unary_send(
        self, request: chat_pb2.SendMessageRequest, token: str, deadline_seconds: float
    ) -> chat_pb2.SendMessageResponse:
        response: chat_pb2.SendMessageResponse = await self._stub.SendMessage(
            request, metadata=self._metadata(token), timeout=deadline_seconds
        )
        return response

    async def history(
        self,
        token: str,
        course_id: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> chat_pb2.ListMessagesResponse:
        request = chat_pb2.ListMessagesRequest(
            course_id=course_id,
            before_message_id=before or "",
            after_message_id=after or "",
            limit=limit,
        )
        response: chat_pb2.ListMessagesResponse = await self._stub.ListMessages(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def get(self, token: str, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        request = chat_pb2.GetMessageRequest(course_id=course_id, message_id=message_id)
        message: chat_pb2.ChatMessage = await self._stub.GetMessage(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return message

    async def delete(
        self, token: str, course_id: str, message_id: str, client_mutation_id: str | None = None
    ) -> chat_pb2.ChatMessage:
        request = chat_pb2.DeleteMessageRequest(
            course_id=course_id,
            message_id=message_id,
            client_mutation_id=client_id(client_mutation_id),
        )
        message: chat_pb2.ChatMessage = await self._stub.DeleteMessage(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return message

    # -- conversations: edits, reactions, pins, threads ------------------------------------

    async def edit(
        self,
        token: str,
        course_id: str,
        message_id: str,
        content: str,
        client_mutation_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        request = chat_pb2.EditMessageRequest(
            course_id=course_id,
            message_id=message_id,
            content=content,
            client_mutation_id=client_id(client_mutation_id),
        )
        message: chat_pb2.ChatMessage = await self._stub.EditMessage(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return message

    async def edit_history(
        self, token: str, course_id: str, message_id: str
    ) -> chat_pb2.EditHistory:
        request = chat_pb2.GetEditHistoryRequest(course_id=course_id, message_id=message_id)
        history: chat_pb2.EditHistory = await self._stub.GetEditHistory(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return history

    async def react(
        self,
        token: str,
        course_id: str,
        message_id: str,
        emoji: str,
        *,
        add: bool,
        client_mutation_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        """Add (or, with add=False, remove) the caller's reaction."""
        request = chat_pb2.ReactionRequest(
            course_id=course_id,
            message_id=message_id,
            emoji=emoji,
            client_mutation_id=client_id(client_mutation_id),
        )
        method = self._stub.AddReaction if add else self._stub.RemoveReaction
        message: chat_pb2.ChatMessage = await method(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return message

    async def pin(
        self,
        token: str,
        course_id: str,
        message_id: str,
        *,
        pin: bool,
        client_mutation_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        """Pin (or, with pin=False, unpin) a message."""
        request = chat_pb2.PinRequest(
            course_id=course_id,
            message_id=message_id,
            client_mutation_id=client_id(client_mutation_id),
        )
        method = self._stub.PinMessage if pin else self._stub.UnpinMessage
        message: chat_pb2.ChatMessage = await method(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return message

    async def change_question(
        self,
        token: str,
        course_id: str,
        message_id: str,
        *,
        change: Literal["endorse", "unendorse", "resolve", "reopen"],
        client_mutation_id: str | None = None,
    ) -> chat_pb2.ChatMessage:
        """Endorse or un-endorse an answer; resolve or reopen a question."""
        request = chat_pb2.QuestionChangeRequest(
            course_id=course_id,
            message_id=message_id,
            client_mutation_id=client_id(client_mutation_id),
        )
        method = {
            "endorse": self._stub.EndorseAnswer,
            "unendorse": self._stub.UnendorseAnswer,
            "resolve": self._stub.ResolveQuestion,
            "reopen": self._stub.ReopenQuestion,
        }[change]
        message: chat_pb2.ChatMessage = await method(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return message

    async def questions(
        self,
        token: str,
        course_id: str,
        *,
        state: chat_pb2.QuestionState.ValueType,
        after: str | None = None,
        limit: int,
    ) -> chat_pb2.ListQuestionsResponse:
        request = chat_pb2.ListQuestionsRequest(
            course_id=course_id, state=state, after=after or "", limit=limit
        )
        response: chat_pb2.ListQuestionsResponse = await self._stub.ListQuestions(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def similar_questions(
        self, token: str, course_id: str, text: str, *, limit: int
    ) -> chat_pb2.SimilarQuestionsResponse:
        request = chat_pb2.SimilarQuestionsRequest(course_id=course_id, text=text, limit=limit)
        response: chat_pb2.SimilarQuestionsResponse = await self._stub.SimilarQuestions(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def pinned(self, token: str, course_id: str) -> chat_pb2.ListPinnedResponse:
        request = chat_pb2.ListPinnedRequest(course_id=course_id)
        response: chat_pb2.ListPinnedResponse = await self._stub.ListPinned(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def thread(
        self,
        token: str,
        course_id: str,
        root_message_id: str,
        *,
        before: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> chat_pb2.ThreadPage:
        request = chat_pb2.GetThreadRequest(
            course_id=course_id,
            root_message_id=root_message_id,
            before_message_id=before or "",
            after_message_id=after or "",
            limit=limit,
        )
        page: chat_pb2.ThreadPage = await self._stub.GetThread(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return page

    async def events(
        self, token: str, course_id: str, *, after: str | None = None, limit: int = 0
    ) -> chat_pb2.ListEventsResponse:
        request = chat_pb2.ListEventsRequest(course_id=course_id, after=after or "", limit=limit)
        response: chat_pb2.ListEventsResponse = await self._stub.ListEvents(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def mark_read(
        self, token: str, course_id: str, message_id: str
    ) -> chat_pb2.CourseReadState:
        request = chat_pb2.MarkReadRequest(course_id=course_id, message_id=message_id)
        state: chat_pb2.CourseReadState = await self._stub.MarkRead(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return state

    async def my_courses(
        self, token: str, course_ids: list[str] | None = None
    ) -> chat_pb2.MyCourses:
        request = chat_pb2.GetMyCoursesRequest(course_ids=course_ids or [])
        courses: chat_pb2.MyCourses = await self._stub.GetMyCourses(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return courses

    async def my_mentions(
        self, token: str, *, after: str | None = None, limit: int = 0
    ) -> chat_pb2.ListMyMentionsResponse:
        request = chat_pb2.ListMyMentionsRequest(after=after or "", limit=limit)
        page: chat_pb2.ListMyMentionsResponse = await self._stub.ListMyMentions(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return page

    async def policy(self, token: str, course_id: str) -> chat_pb2.CoursePolicy:
        request = chat_pb2.GetCoursePolicyRequest(course_id=course_id)
        policy: chat_pb2.CoursePolicy = await self._stub.GetCoursePolicy(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return policy

    def subscribe(
        self, token: str, course_id: str, after: str | None = None
    ) -> grpc.aio.UnaryStreamCall:
        request = chat_pb2.SubscribeMessagesRequest(
            course_id=course_id, after_message_id=after or ""
        )
        return self._stub.SubscribeMessages(request, metadata=self._metadata(token))

    def subscribe_events(
        self, token: str, course_id: str, after: str | None = None, *, ephemeral: bool = False
    ) -> grpc.aio.UnaryStreamCall:
        request = chat_pb2.SubscribeEventsRequest(
            course_id=course_id, after=after or "", ephemeral=ephemeral
        )
        return self._stub.SubscribeEvents(request, metadata=self._metadata(token))

    def export(self, token: str, course_id: str) -> grpc.aio.UnaryStreamCall:
        """A course's export (moderators): ExportChunks of NDJSON lines, the last line
        `{"type":"end",…}` (nextcampus_common.export)."""
        request = chat_pb2.ExportCourseRequest(course_id=course_id)
        return self._stub.ExportCourse(request, metadata=self._metadata(token))

    # -- presence and typing ---------------------------------------------------------------

    async def join_presence(
        self, token: str, course_id: str, instance_id: str
    ) -> chat_pb2.PresenceResponse:
        request = chat_pb2.PresenceRequest(course_id=course_id, instance_id=instance_id)
        response: chat_pb2.PresenceResponse = await self._stub.JoinPresence(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def leave_presence(
        self, token: str, course_id: str, instance_id: str
    ) -> chat_pb2.PresenceResponse:
        request = chat_pb2.PresenceRequest(course_id=course_id, instance_id=instance_id)
        response: chat_pb2.PresenceResponse = await self._stub.LeavePresence(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def presence_heartbeat(
        self, token: str, course_id: str, instance_id: str, departed: list[str] | None = None
    ) -> chat_pb2.PresenceHeartbeatResponse:
        request = chat_pb2.PresenceHeartbeatRequest(
            course_id=course_id, instance_id=instance_id, departed_user_ids=departed or []
        )
        response: chat_pb2.PresenceHeartbeatResponse = await self._stub.PresenceHeartbeat(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response

    async def presence(
        self, token: str, course_id: str, *, after: str | None = None, limit: int = 0
    ) -> chat_pb2.PresencePage:
        request = chat_pb2.GetPresenceRequest(course_id=course_id, after=after or "", limit=limit)
        page: chat_pb2.PresencePage = await self._stub.GetPresence(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return page

    async def typing(
        self, token: str, course_id: str, thread_id: str | None = None
    ) -> chat_pb2.SendTypingResponse:
        request = chat_pb2.SendTypingRequest(course_id=course_id, thread_id=thread_id or "")
        response: chat_pb2.SendTypingResponse = await self._stub.SendTyping(
            request, metadata=self._metadata(token), timeout=self._deadline
        )
        return response


class ChatClient:
    """ChatService as one user sees it: ChatApi with a token bound to every call (the CLI,
    tests, benchmarks)."""

    def __init__(
        self,
        target: str,
        token: str,
        options: list[tuple[str, int | str]] | None = None,
        *,
        max_attempts: int = 1,
    ) -> None:
        # No automatic retries by default: tests and the CLI see each failure as it is.
        self.api = ChatApi(target, options=options, max_attempts=max_attempts)
        self.target = target
        self.token = token

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    async def send(
        self,
        course_id: str,
        content: str,
        client_message_id: str = "",
        deadline_seconds: float = 10.0,
        *,
        reply_to: str = "",
        question: bool = False,
        anonymous: bool = False,
    ) -> chat_pb2.SendMessageResponse:
        return await self.api.send(
            self.token,
            course_id,
            content,
            client_message_id or None,
            reply_to=reply_to or None,
            question=question,
            anonymous=anonymous,
            deadline_seconds=deadline_seconds,
        )

    async def history(
        self, course_id: str, *, before: str = "", after: str = "", limit: int = 0
    ) -> chat_pb2.ListMessagesResponse:
        return await self.api.history(
            self.token, course_id, before=before or None, after=after or None, limit=limit
        )

    async def events(
        self, course_id: str, *, after: str = "", limit: int = 0
    ) -> chat_pb2.ListEventsResponse:
        return await self.api.events(self.token, course_id, after=after or None, limit=limit)

    async def all_events(
        self, course_id: str, *, after: str = "", page_limit: int = 200
    ) -> list[chat_pb2.CourseEvent]:
        """Every change after `after` the log holds now, page by page."""
        found: list[chat_pb2.CourseEvent] = []
        while True:
            page = await self.events(course_id, after=after, limit=page_limit)
            found += page.events
            if not page.has_more:
                return found
            after = page.events[-1].cursor

    async def get(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        return await self.api.get(self.token, course_id, message_id)

    async def delete(self, course_id: str, message_id: str) -> chat_pb2.ChatMessage:
        return await self.api.delete(self.token, course_id, message_id)

    async def mark_read(self, course_id: str, message_id: str) -> chat_pb2.CourseReadState:
        return await self.api.mark_read(self.token, course_id, message_id)

    async def my_courses(self, *course_ids: str) -> chat_pb2.MyCourses:
        return await self.api.my_courses(self.token, list(course_ids))

    async def my_mentions(
        self, *, after: str = "", limit: int = 0
    ) -> chat_pb2.ListMyMentionsResponse:
        return await self.api.my_mentions(self.token, after=after or None, limit=limit)

    async def policy(self, course_id: str) -> chat_pb2.CoursePolicy:
        return await self.api.policy(self.token, course_id)

    def subscribe(self, course_id: str, after: str = "") -> grpc.aio.UnaryStreamCall:
        return self.api.subscribe(self.token, course_id, after or None)

    def subscribe_events(
        self, course_id: str, after: str = "", *, ephemeral: bool = False
    ) -> grpc.aio.UnaryStreamCall:
        return self.api.subscribe_events(self.token, course_id, after or None, ephemeral=ephemeral)

    def export(self, course_id: str) -> grpc.aio.UnaryStreamCall:
        return self.api.export(self.token, course_id)

    async def messages(
        self, course_id: str, after: str = ""
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async for message in self.subscribe(course_id, after):
            yield message
