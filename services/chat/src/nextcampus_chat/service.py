"""The gRPC edge: authenticate, validate, delegate to the store and the hub, translate errors."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from nextcampus_chat import similarity
from nextcampus_chat.anonymity import seen_by
from nextcampus_chat.errors import ChatError, Problem
from nextcampus_chat.feed import FeedHub, stream_events, stream_messages
from nextcampus_chat.mentions import parse_mentions
from nextcampus_chat.metrics import ChatMetrics
from nextcampus_chat.reactions import check_emoji
from nextcampus_chat.settings import ChatSettings
from nextcampus_chat.store import (
    MessageStore,
    QuestionChange,
    mention_cursor,
    parse_mention_cursor,
)
from nextcampus_common import export
from nextcampus_common.auth import AuthError, Identity, TokenVerifier, bearer_token
from nextcampus_common.chat_api import MAX_DEPARTED_PER_HEARTBEAT
from nextcampus_common.content import first_control_character
from nextcampus_common.ids import (
    InvalidId,
    check_client_message_id,
    check_course_id,
    check_event_cursor,
    check_instance_id,
    check_message_id,
    check_user_id,
)
from nextcampus_common.logs import get_logger
from nextcampus_common.metadata import (
    AUTHORIZATION,
    PROBLEM,
    RETRY_AFTER_MS,
    STREAM_AFTER_CURSOR,
    STREAM_AFTER_MESSAGE_ID,
    metadata_value,
)
from nextcampus_common.proto.chat.v1 import chat_pb2, chat_pb2_grpc
from nextcampus_common.redis_cluster import RedisUnavailable, WriteNotDurable

log = get_logger(__name__)

DEFAULT_PAGE_LIMIT = 50
DEFAULT_SIMILAR_QUESTIONS = 5
MAX_SIMILAR_QUESTIONS = 20
QUESTION_STATES: dict[int, str] = {
    chat_pb2.QUESTION_STATE_UNSPECIFIED: "all",
    chat_pb2.QUESTION_STATE_ALL: "all",
    chat_pb2.QUESTION_STATE_OPEN: "open",
    chat_pb2.QUESTION_STATE_RESOLVED: "resolved",
}
# GetMyCourses with named courses: a page's worth (a token's own list has no such bound).
MAX_COURSES_PER_CALL = 200

STATUS_OF: dict[Problem, grpc.StatusCode] = {
    Problem.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Problem.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Problem.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Problem.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Problem.SLOW_MODE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Problem.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Problem.READ_ONLY: grpc.StatusCode.FAILED_PRECONDITION,
    Problem.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    # A stream that ended on our side: the client resumes with after_message_id.
    Problem.SLOW_CONSUMER: grpc.StatusCode.UNAVAILABLE,
    Problem.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    Problem.CURSOR_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    Problem.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
}

# Who the current call is from, once its token was verified: every answer is shown as they
# may see it (anonymity.seen_by). Each call runs in a task of its own, so in a context of its own.
CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("caller", default=None)

Request = TypeVar("Request")
Response = TypeVar("Response", bound=Message)
Handler = Callable[["ChatService", Any, grpc.aio.ServicerContext], Awaitable[Response]]
Item = TypeVar("Item", bound=Message)


def _invalid(exc: InvalidId) -> ChatError:
    return ChatError(Problem.INVALID_ARGUMENT, str(exc))


# Sends of one SendMessages stream being handled at once; the stream's next request is read
# once one of them is answered (HTTP/2 flow control then holds the sender back).
MAX_STREAMED_SENDS_IN_FLIGHT = 512


class _StreamedCall:
    """What a streamed send's handler reads of its call: the sender's credentials, as a
    unary call's metadata would carry them."""

    def __init__(self, authorization: str) -> None:
        self._metadata = ((AUTHORIZATION, authorization),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def _failure(error: ChatError) -> chat_pb2.SendFailure:
    """A refused streamed send: what SendMessage's status and trailers would say."""
    return chat_pb2.SendFailure(
        code=STATUS_OF[error.problem].value[0],
        message=error.message,
        problem=error.problem.value,
        retry_after_ms=error.retry_after_ms,
    )


async def _abort(context: grpc.aio.ServicerContext, error: ChatError) -> None:
    trailing = [(PROBLEM, error.problem.value)]
    if error.retry_after_ms is not None:
        trailing.append((RETRY_AFTER_MS, str(error.retry_after_ms)))
    context.set_trailing_metadata(tuple(trailing))
    await context.abort(STATUS_OF[error.problem], error.message)


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so the handler can answer
    INVALID_ARGUMENT (grpc would answer UNKNOWN for an exception in the deserializer)."""

    def __init__(self, type_name: str, reason: str) -> None:
        self.error = ChatError(
            Problem.INVALID_ARGUMENT, f"request is not a valid {type_name}: {reason}"
        )


def _tolerant(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    def deserialize(data: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(message_class.DESCRIPTOR.full_name, str(exc))

    return deserialize


def _parsed(request: Request | MalformedRequest) -> Request:
    if isinstance(request, MalformedRequest):
        raise request.error
    return request


def add_to_server(service: ChatService, server: grpc.aio.Server) -> None:
    """Register ChatService like the generated `add_ChatServiceServicer_to_server`, but with
    deserializers that turn corrupt bytes into INVALID_ARGUMENT."""
    descriptor = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]
    handlers = {}
    for method in descriptor.methods:
        make_handler = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make_handler(
            getattr(service, method.name),
            request_deserializer=_tolerant(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),)
    )
    server.add_registered_method_handlers(descriptor.full_name, handlers)


def _as_chat_error(exc: Exception) -> ChatError | None:
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, WriteNotDurable):
        return ChatError(
            Problem.UNAVAILABLE,
            f"not acknowledged: {exc}; retry (with the same client_message_id)",
            retry_after_ms=exc.retry_after_ms,
        )
    if isinstance(exc, RedisUnavailable):
        return ChatError(Problem.UNAVAILABLE, "chat storage is unavailable; retry shortly")
    if isinstance(exc, InvalidId):
        return _invalid(exc)
    return None


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        settings: ChatSettings,
        store: MessageStore,
        hub: FeedHub,
        verifier: TokenVerifier,
        metrics: ChatMetrics,
    ) -> None:
        self._settings = settings
        self._store = store
        self._hub = hub
        self._verifier = verifier
        self._metrics = metrics
        self._grams = similarity.GramCache()

    # -- helpers ---------------------------------------------------------------------------

    async def _identity(self, context: grpc.aio.ServicerContext) -> Identity:
        header = metadata_value(context.invocation_metadata(), AUTHORIZATION)
        try:
            identity = await self._verifier.verify(bearer_token(header))
        except AuthError as exc:
            raise ChatError(Problem.UNAUTHENTICATED, str(exc)) from exc
        CALLER.set(identity)
        return identity

    async def _member(self, context: grpc.aio.ServicerContext, course_id: str) -> Identity:
        identity = await self._identity(context)
        check_course_id(course_id)
        if not identity.is_member(course_id):
            raise ChatError(
                Problem.PERMISSION_DENIED, f"user {identity.user_id} is not in course {course_id}"
            )
        return identity

    def _page_limit(self, requested: int) -> int:
        limit = requested or DEFAULT_PAGE_LIMIT
        if not 1 <= limit <= self._settings.history_page_limit:
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"limit must be between 1 and {self._settings.history_page_limit}",
            )
        return limit

    @staticmethod
    def _optional_message_id(value: str) -> str | None:
        return check_message_id(value) if value else None

    @staticmethod
    def _mutation_id(value: str) -> str:
        """A client_mutation_id as given ("" for none: the change is idempotent anyway, or
        the caller accepts a retry applying twice)."""
        if value:
            try:
                check_client_message_id(value)
            except InvalidId as exc:
                raise ChatError(
                    Problem.INVALID_ARGUMENT,
                    str(exc).replace("client message id", "client mutation id"),
                ) from None
        return value

    def _checked_content(self, content: str) -> str:
        """The rules every message content follows (sends and edits); the course's own
        length limit is checked by the script, against its policy."""
        if not content.strip():
            raise ChatError(Problem.INVALID_ARGUMENT, "content must not be empty")
        if len(content) > self._settings.max_content_length:
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"content is longer than {self._settings.max_content_length} characters",
            )
        control = first_control_character(content)
        if control is not None:
            raise ChatError(Problem.INVALID_ARGUMENT, control.problem())
        return content

    # -- unary RPCs ------------------------------------------------------------------------

    async def _answer(
        self, method: Handler[Response], request: Any, context: grpc.aio.ServicerContext
    ) -> Response:
        """A unary handler's answer as its caller may see it; a refusal raises its ChatError,
        an unexpected failure is raised as it is (both counted)."""
        name = method.__name__
        try:
            response = await method(self, _parsed(request), context)
            caller = CALLER.get()
            if caller is not None:
                response = seen_by(response, caller.may_moderate)
        except Exception as exc:
            error = _as_chat_error(exc)
            if error is None:
                self._metrics.requests.labels(name, "INTERNAL").inc()
                raise
            self._metrics.requests.labels(name, STATUS_OF[error.problem].name).inc()
            if name == "SendMessage":
                self._metrics.sends.labels(error.problem.value).inc()
            if error is exc:
                raise
            raise error from exc
        self._metrics.requests.labels(name, "OK").inc()
        return response

    @staticmethod
    def _unary(method: Handler[Response]) -> Handler[Response]:
        @functools.wraps(method)
        async def wrapper(
            self: ChatService, request: Any, context: grpc.aio.ServicerContext
        ) -> Response:
            try:
                return await self._answer(method, request, context)
            except ChatError as error:
                await _abort(context, error)
                raise  # unreachable: abort raises

        return wrapper

    @_unary
    async def SendMessage(
        self, request: chat_pb2.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.SendMessageResponse:
        started = time.perf_counter()
        self._metrics.hops.passed("chat_send", request.content)
        identity = await self._member(context, request.course_id)
        content = self._checked_content(request.content)
        client_message_id = request.client_message_id
        if client_message_id:
            check_client_message_id(client_message_id)
        question = request.kind == chat_pb2.MESSAGE_KIND_QUESTION
        if request.kind not in (chat_pb2.MESSAGE_KIND_UNSPECIFIED, chat_pb2.MESSAGE_KIND_QUESTION):
            raise ChatError(Problem.INVALID_ARGUMENT, f"unknown message kind {request.kind}")
        if question and request.reply_to_message_id:
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                "a question cannot be a reply: send it on its own, its replies are its answers",
            )
        mentions = parse_mentions(content)
        if mentions.course and not identity.may_moderate(request.course_id):
            raise ChatError(
                Problem.PERMISSION_DENIED,
                f"only moderators of course {request.course_id} may mention @course "
                "(everyone); mention people by their user id",
            )
        result = await self._store.send(
            request.course_id,
            identity.user_id,
            content,
            client_message_id or None,
            reply_to=self._optional_message_id(request.reply_to_message_id),
            mentions=mentions.user_ids,
            mentions_course=mentions.course,
            moderator=identity.may_moderate(request.course_id),
            question=question,
            anonymous=request.anonymous,
        )
        self._metrics.hops.passed("chat_stored", content)
        self._metrics.sends.labels("duplicate" if result.duplicate else "ok").inc()
        self._metrics.send_duration.observe(time.perf_counter() - started)
        return chat_pb2.SendMessageResponse(message=result.message, duplicate=result.duplicate)

    async def SendMessages(
        self,
        requests: AsyncIterator[chat_pb2.StreamedSend | MalformedRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[chat_pb2.StreamedSendResult]:
        """Each streamed send handled as a SendMessage call of its own (a task, so a context
        of its own for CALLER), at most MAX_STREAMED_SENDS_IN_FLIGHT at once, answered as
        each finishes. Ends when the caller has sent everything and all is answered."""
        results: asyncio.Queue[chat_pb2.StreamedSendResult | None] = asyncio.Queue()
        room = asyncio.Semaphore(MAX_STREAMED_SENDS_IN_FLIGHT)
        sending: set[asyncio.Task[None]] = set()
        malformed: list[ChatError] = []

        async def answer(streamed: chat_pb2.StreamedSend) -> None:
            try:
                results.put_nowait(await self._streamed_send(streamed))
            finally:
                room.release()

        async def read() -> None:
            try:
                async for streamed in requests:
                    if isinstance(streamed, MalformedRequest):
                        malformed.append(streamed.error)
                        return
                    await room.acquire()
                    task = asyncio.create_task(answer(streamed))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                if sending:
                    await asyncio.wait(set(sending))
            finally:
                results.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (result := await results.get()) is not None:
                yield result
            if malformed:
                await _abort(context, malformed[0])
        finally:
            reader.cancel()
            for task in list(sending):
                task.cancel()

    async def _streamed_send(self, streamed: chat_pb2.StreamedSend) -> chat_pb2.StreamedSendResult:
        call = cast(grpc.aio.ServicerContext, _StreamedCall(streamed.authorization))
        try:
            sent = await self._answer(_SEND_MESSAGE, streamed.send, call)
        except ChatError as error:
            return chat_pb2.StreamedSendResult(sequence=streamed.sequence, failed=_failure(error))
        except Exception:
            log.exception("a streamed send failed", course_id=streamed.send.course_id)
            return chat_pb2.StreamedSendResult(
                sequence=streamed.sequence,
                failed=chat_pb2.SendFailure(
                    code=grpc.StatusCode.INTERNAL.value[0],
                    message="internal error in the chat service",
                ),
            )
        return chat_pb2.StreamedSendResult(sequence=streamed.sequence, sent=sent)

    @_unary
    async def ListMessages(
        self, request: chat_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ListMessagesResponse:
        identity = await self._member(context, request.course_id)
        limit = self._page_limit(request.limit)
        page = await self._store.history(
            request.course_id,
            after=self._optional_message_id(request.after_message_id),
            before=self._optional_message_id(request.before_message_id),
            limit=limit,
            viewer=identity.user_id,
        )
        return chat_pb2.ListMessagesResponse(
            messages=page.messages, has_more=page.has_more, event_cursor=page.event_cursor
        )

    @_unary
    async def GetMessage(
        self, request: chat_pb2.GetMessageRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        identity = await self._member(context, request.course_id)
        return await self._store.get(
            request.course_id, check_message_id(request.message_id), viewer=identity.user_id
        )

    @_unary
    async def DeleteMessage(
        self, request: chat_pb2.DeleteMessageRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        identity = await self._member(context, request.course_id)
        # Deleting twice changes nothing: client_mutation_id is checked, not needed.
        self._mutation_id(request.client_mutation_id)
        message, _changed = await self._store.delete(
            request.course_id,
            check_message_id(request.message_id),
            identity.user_id,
            moderator=identity.may_moderate(request.course_id),
        )
        return message

    @_unary
    async def EditMessage(
        self, request: chat_pb2.EditMessageRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        identity = await self._member(context, request.course_id)
        message_id = check_message_id(request.message_id)
        content = self._checked_content(request.content)
        message, _changed = await self._store.edit(
            request.course_id,
            message_id,
            identity.user_id,
            content,
            self._mutation_id(request.client_mutation_id),
        )
        return message

    @_unary
    async def GetEditHistory(
        self, request: chat_pb2.GetEditHistoryRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.EditHistory:
        identity = await self._member(context, request.course_id)
        message_id = check_message_id(request.message_id)
        message = await self._store.get(request.course_id, message_id)
        if message.user_id != identity.user_id and not identity.may_moderate(request.course_id):
            raise ChatError(
                Problem.PERMISSION_DENIED,
                "only the author and the course's moderators may read a message's edits",
            )
        versions = await self._store.edit_history(request.course_id, message_id)
        return chat_pb2.EditHistory(versions=versions)

    async def _react(
        self, request: chat_pb2.ReactionRequest, context: grpc.aio.ServicerContext, *, add: bool
    ) -> chat_pb2.ChatMessage:
        identity = await self._member(context, request.course_id)
        message, _changed = await self._store.react(
            request.course_id,
            check_message_id(request.message_id),
            identity.user_id,
            check_emoji(request.emoji),
            add=add,
            mutation_id=self._mutation_id(request.client_mutation_id),
        )
        return message

    @_unary
    async def AddReaction(
        self, request: chat_pb2.ReactionRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._react(request, context, add=True)

    @_unary
    async def RemoveReaction(
        self, request: chat_pb2.ReactionRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._react(request, context, add=False)

    async def _pin(
        self, request: chat_pb2.PinRequest, context: grpc.aio.ServicerContext, *, pin: bool
    ) -> chat_pb2.ChatMessage:
        identity = await self._member(context, request.course_id)
        if not identity.may_moderate(request.course_id):
            raise ChatError(
                Problem.PERMISSION_DENIED,
                f"only moderators of course {request.course_id} may pin and unpin messages",
            )
        message, _changed = await self._store.pin(
            request.course_id,
            check_message_id(request.message_id),
            identity.user_id,
            pin=pin,
            mutation_id=self._mutation_id(request.client_mutation_id),
        )
        return message

    @_unary
    async def PinMessage(
        self, request: chat_pb2.PinRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._pin(request, context, pin=True)

    @_unary
    async def UnpinMessage(
        self, request: chat_pb2.PinRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._pin(request, context, pin=False)

    @_unary
    async def ListPinned(
        self, request: chat_pb2.ListPinnedRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ListPinnedResponse:
        identity = await self._member(context, request.course_id)
        messages = await self._store.pinned(request.course_id, viewer=identity.user_id)
        return chat_pb2.ListPinnedResponse(messages=messages)

    # -- questions and endorsed answers ----------------------------------------------------

    async def _change_question(
        self,
        request: chat_pb2.QuestionChangeRequest,
        context: grpc.aio.ServicerContext,
        change: QuestionChange,
    ) -> chat_pb2.ChatMessage:
        identity = await self._member(context, request.course_id)
        moderator = identity.may_moderate(request.course_id)
        if change in ("endorse", "unendorse") and not moderator:
            raise ChatError(
                Problem.PERMISSION_DENIED,
                f"only moderators of course {request.course_id} may endorse answers",
            )
        message, _changed = await self._store.change_question(
            request.course_id,
            check_message_id(request.message_id),
            identity.user_id,
            change=change,
            moderator=moderator,
            mutation_id=self._mutation_id(request.client_mutation_id),
        )
        return message

    @_unary
    async def EndorseAnswer(
        self, request: chat_pb2.QuestionChangeRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._change_question(request, context, "endorse")

    @_unary
    async def UnendorseAnswer(
        self, request: chat_pb2.QuestionChangeRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._change_question(request, context, "unendorse")

    @_unary
    async def ResolveQuestion(
        self, request: chat_pb2.QuestionChangeRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._change_question(request, context, "resolve")

    @_unary
    async def ReopenQuestion(
        self, request: chat_pb2.QuestionChangeRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ChatMessage:
        return await self._change_question(request, context, "reopen")

    @_unary
    async def ListQuestions(
        self, request: chat_pb2.ListQuestionsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ListQuestionsResponse:
        identity = await self._member(context, request.course_id)
        state = QUESTION_STATES.get(request.state)
        if state is None:
            raise ChatError(Problem.INVALID_ARGUMENT, f"unknown question state {request.state}")
        questions, has_more = await self._store.questions(
            request.course_id,
            state=state,
            after=self._optional_message_id(request.after),
            limit=self._page_limit(request.limit),
            viewer=identity.user_id,
        )
        return chat_pb2.ListQuestionsResponse(questions=questions, has_more=has_more)

    @_unary
    async def SimilarQuestions(
        self, request: chat_pb2.SimilarQuestionsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.SimilarQuestionsResponse:
        identity = await self._member(context, request.course_id)
        text = self._checked_content(request.text)
        limit = request.limit or DEFAULT_SIMILAR_QUESTIONS
        if not 1 <= limit <= MAX_SIMILAR_QUESTIONS:
            raise ChatError(
                Problem.INVALID_ARGUMENT, f"limit must be between 1 and {MAX_SIMILAR_QUESTIONS}"
            )
        texts = await self._store.question_texts(request.course_id, similarity.MAX_COMPARED)
        candidates = self._grams.grams_of(request.course_id, texts)
        # Pure Python, up to tens of ms for MAX_COMPARED questions: off the event loop, so
        # streams keep flowing meanwhile.
        matches = await asyncio.to_thread(similarity.rank, text, candidates, limit=limit)
        found = await self._store.questions_by_id(
            request.course_id, [match.question_id for match in matches], viewer=identity.user_id
        )
        by_id = {question.message_id: question for question in found}
        return chat_pb2.SimilarQuestionsResponse(
            questions=[
                chat_pb2.SimilarQuestion(question=by_id[match.question_id], score=match.score)
                for match in matches
                if match.question_id in by_id
            ]
        )

    @_unary
    async def GetThread(
        self, request: chat_pb2.GetThreadRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ThreadPage:
        identity = await self._member(context, request.course_id)
        page = await self._store.thread(
            request.course_id,
            check_message_id(request.root_message_id),
            after=self._optional_message_id(request.after_message_id),
            before=self._optional_message_id(request.before_message_id),
            limit=self._page_limit(request.limit),
            viewer=identity.user_id,
        )
        return chat_pb2.ThreadPage(root=page.root, replies=page.replies, has_more=page.has_more)

    @_unary
    async def MarkRead(
        self, request: chat_pb2.MarkReadRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CourseReadState:
        identity = await self._member(context, request.course_id)
        return await self._store.mark_read(
            request.course_id, identity.user_id, check_message_id(request.message_id)
        )

    def _my_courses(self, identity: Identity, asked: Sequence[str]) -> list[str]:
        """The courses asked for (each once, each one of the token's), or all of them."""
        if not asked:
            return sorted(identity.courses | identity.moderates)
        if len(asked) > MAX_COURSES_PER_CALL:
            raise ChatError(
                Problem.INVALID_ARGUMENT, f"at most {MAX_COURSES_PER_CALL} courses per call"
            )
        courses = list(dict.fromkeys(check_course_id(c) for c in asked))
        strangers = [c for c in courses if not identity.is_member(c)]
        if strangers:
            raise ChatError(
                Problem.PERMISSION_DENIED,
                f"user {identity.user_id} is not in course {strangers[0]}",
            )
        return courses

    @_unary
    async def GetMyCourses(
        self, request: chat_pb2.GetMyCoursesRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.MyCourses:
        identity = await self._identity(context)
        courses = self._my_courses(identity, request.course_ids)
        return chat_pb2.MyCourses(courses=await self._store.read_states(courses, identity.user_id))

    @_unary
    async def ListMyMentions(
        self, request: chat_pb2.ListMyMentionsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ListMyMentionsResponse:
        identity = await self._identity(context)
        limit = self._page_limit(request.limit)
        after = None
        if request.after:
            try:
                after = parse_mention_cursor(request.after)
            except ValueError:
                raise ChatError(
                    Problem.INVALID_ARGUMENT,
                    "after must be an end_cursor a ListMyMentions response gave",
                ) from None
        messages, has_more = await self._store.mentions(
            self._my_courses(identity, ()), identity.user_id, after=after, limit=limit
        )
        return chat_pb2.ListMyMentionsResponse(
            messages=messages,
            has_more=has_more,
            end_cursor=mention_cursor(messages[-1]) if messages else request.after,
        )

    @_unary
    async def GetCoursePolicy(
        self, request: chat_pb2.GetCoursePolicyRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.CoursePolicy:
        await self._member(context, request.course_id)
        return await self._store.policy(request.course_id)

    @_unary
    async def ListEvents(
        self, request: chat_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.ListEventsResponse:
        await self._member(context, request.course_id)
        limit = self._page_limit(request.limit)
        after = check_event_cursor(request.after) if request.after else None
        page = await self._store.events(request.course_id, after=after, limit=limit)
        return chat_pb2.ListEventsResponse(events=page.events, has_more=page.has_more)

    # -- presence and typing ---------------------------------------------------------------

    @_unary
    async def JoinPresence(
        self, request: chat_pb2.PresenceRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.PresenceResponse:
        # Only the token's own user, only a member of the course.
        identity = await self._member(context, request.course_id)
        changed, count = await self._store.join_presence(
            request.course_id, check_instance_id(request.instance_id), identity.user_id
        )
        return chat_pb2.PresenceResponse(changed=changed, online_count=count)

    @_unary
    async def LeavePresence(
        self, request: chat_pb2.PresenceRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.PresenceResponse:
        identity = await self._member(context, request.course_id)
        changed, count = await self._store.leave_presence(
            request.course_id, check_instance_id(request.instance_id), identity.user_id
        )
        return chat_pb2.PresenceResponse(changed=changed, online_count=count)

    @_unary
    async def PresenceHeartbeat(
        self, request: chat_pb2.PresenceHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.PresenceHeartbeatResponse:
        await self._member(context, request.course_id)
        if len(request.departed_user_ids) > MAX_DEPARTED_PER_HEARTBEAT:
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"at most {MAX_DEPARTED_PER_HEARTBEAT} departed users per heartbeat",
            )
        departed = [check_user_id(user) for user in request.departed_user_ids]
        held, count = await self._store.presence_heartbeat(
            request.course_id, check_instance_id(request.instance_id), departed
        )
        return chat_pb2.PresenceHeartbeatResponse(
            instance_online=held,
            online_count=count,
            ttl_seconds=int(self._settings.presence_ttl_seconds),
        )

    @_unary
    async def GetPresence(
        self, request: chat_pb2.GetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.PresencePage:
        await self._member(context, request.course_id)
        if not 0 <= request.limit <= self._settings.history_page_limit:
            raise ChatError(
                Problem.INVALID_ARGUMENT,
                f"limit must be between 0 and {self._settings.history_page_limit}",
            )
        after = check_user_id(request.after) if request.after else ""
        page = await self._store.presence(request.course_id, after=after, limit=request.limit)
        return chat_pb2.PresencePage(
            online_count=page.online_count, members=page.members, has_more=page.has_more
        )

    @_unary
    async def SendTyping(
        self, request: chat_pb2.SendTypingRequest, context: grpc.aio.ServicerContext
    ) -> chat_pb2.SendTypingResponse:
        identity = await self._member(context, request.course_id)
        thread_id = self._optional_message_id(request.thread_id) or ""
        typing = await self._store.typing(request.course_id, identity.user_id, thread_id)
        return chat_pb2.SendTypingResponse(
            published=typing.published, retry_after_ms=typing.retry_after_ms
        )

    # -- streaming -------------------------------------------------------------------------

    async def SubscribeMessages(
        self, request: chat_pb2.SubscribeMessagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async def messages(
            request: chat_pb2.SubscribeMessagesRequest,
        ) -> AsyncIterator[chat_pb2.ChatMessage]:
            after = self._optional_message_id(request.after_message_id)
            async for message in stream_messages(
                self._hub,
                self._store,
                request.course_id,
                after,
                page_limit=self._settings.history_page_limit,
                on_live=lambda last: context.send_initial_metadata(
                    ((STREAM_AFTER_MESSAGE_ID, str(last)),)
                ),
            ):
                yield message

        async for message in self._stream("SubscribeMessages", request, context, messages):
            yield message

    async def SubscribeEvents(
        self, request: chat_pb2.SubscribeEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.CourseEvent]:
        async def events(
            request: chat_pb2.SubscribeEventsRequest,
        ) -> AsyncIterator[chat_pb2.CourseEvent]:
            after = check_event_cursor(request.after) if request.after else None
            async for event in stream_events(
                self._hub,
                self._store,
                request.course_id,
                after,
                page_limit=self._settings.history_page_limit,
                on_live=lambda cursor: context.send_initial_metadata(
                    ((STREAM_AFTER_CURSOR, cursor),)
                ),
                ephemeral=request.ephemeral,
            ):
                yield event

        async for event in self._stream("SubscribeEvents", request, context, events):
            yield event

    async def ExportCourse(
        self, request: chat_pb2.ExportCourseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ExportChunk]:
        async def chunks(
            request: chat_pb2.ExportCourseRequest,
        ) -> AsyncIterator[chat_pb2.ExportChunk]:
            identity = await self._identity(context)
            if not identity.may_moderate(request.course_id):
                raise ChatError(
                    Problem.PERMISSION_DENIED,
                    f"only moderators of course {request.course_id} may export it",
                )
            lines = self._store.export_lines(request.course_id)
            async for chunk in export.chunked(lines, self._settings.export_chunk_bytes):
                yield chat_pb2.ExportChunk(lines=chunk)

        async for chunk in self._stream("ExportCourse", request, context, chunks):
            yield chunk

    async def _stream(
        self,
        name: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        items: Callable[[Any], AsyncIterator[Item]],
    ) -> AsyncIterator[Item]:
        """A course's stream for a member: ended when the token expires (on a quiet course
        too: the client resumes with a new token), errors reported as gRPC statuses."""
        code = "OK"
        try:
            request = _parsed(request)
            identity = await self._member(context, request.course_id)
            stream = items(request)
            loop = asyncio.get_running_loop()
            expires = loop.time() + identity.expires_at - time.time()
            while True:
                # The deadline covers the wait for the next item only, never the yield:
                # grpc writes the message in this task, and must not be cancelled.
                deadline = asyncio.timeout_at(expires)
                try:
                    async with deadline:
                        item = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if not deadline.expired():
                        raise
                    raise ChatError(
                        Problem.UNAUTHENTICATED, "token expired: resume with a new token"
                    ) from None
                yield seen_by(item, identity.may_moderate)
        except Exception as exc:
            error = _as_chat_error(exc)
            if error is None:
                code = "INTERNAL"
                raise
            code = STATUS_OF[error.problem].name
            await _abort(context, error)
        finally:
            self._metrics.requests.labels(name, code).inc()


# SendMessage's own handler, for the sends of SendMessages (the same checks and answers).
_SEND_MESSAGE: Handler[chat_pb2.SendMessageResponse] = inspect.unwrap(ChatService.SendMessage)
