"""What one user may hold on one GraphQL process, so that no user can exhaust a pod:

- sockets (`max_sockets_per_user`): each holds buffers and a task;
- subscriptions across all their sockets (`max_subscriptions_per_user`);
- the per-event work of their subscriptions (`max_subscription_cost_per_user`): every distinct
  subscription document (fan-out key) is a fan-out group executed once per event, so the
  costs of the user's distinct documents are added up. Subscribing again with a document the
  user already holds — another course, another socket — joins a group and adds nothing.

Each grant returns its release; releasing twice is harmless. Users with nothing left are
forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nextcampus_graphql.errors import ApiError, Code
from nextcampus_graphql.operations import FanoutKey

Release = Callable[[], None]


@dataclass
class _Usage:
    sockets: int = 0
    subscriptions: int = 0
    # subscriptions per distinct document, and the document's cost
    documents: dict[FanoutKey, tuple[int, int]] = field(default_factory=dict)
    subscription_cost: int = 0

    def idle(self) -> bool:
        return self.sockets == 0 and self.subscriptions == 0


class UserLimits:
    def __init__(
        self, *, max_sockets: int, max_subscriptions: int, max_subscription_cost: int
    ) -> None:
        self.max_sockets = max_sockets
        self.max_subscriptions = max_subscriptions
        self.max_subscription_cost = max_subscription_cost
        self._users: dict[str, _Usage] = {}

    def _usage(self, user_id: str) -> _Usage:
        usage = self._users.get(user_id)
        if usage is None:
            usage = self._users[user_id] = _Usage()
        return usage

    def _forget_if_idle(self, user_id: str, usage: _Usage) -> None:
        if usage.idle() and self._users.get(user_id) is usage:
            del self._users[user_id]

    def held(self, user_id: str) -> tuple[int, int, int]:
        """What `user_id` holds: sockets, subscriptions, and their subscriptions' cost."""
        usage = self._users.get(user_id) or _Usage()
        return usage.sockets, usage.subscriptions, usage.subscription_cost

    def users(self) -> int:
        """Users holding anything."""
        return len(self._users)

    def open_socket(self, user_id: str) -> Release | None:
        """A socket of `user_id`, or None when they hold `max_sockets` already."""
        usage = self._usage(user_id)
        if usage.sockets >= self.max_sockets:
            self._forget_if_idle(user_id, usage)
            return None
        usage.sockets += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                usage.sockets -= 1
                self._forget_if_idle(user_id, usage)

        return release

    def add_subscription(self, user_id: str, key: FanoutKey, cost: int) -> Release:
        """Count one subscription of `user_id` with fan-out key `key` (its document costing
        `cost` per event); RATE_LIMITED when it would pass a limit."""
        usage = self._usage(user_id)
        try:
            if usage.subscriptions >= self.max_subscriptions:
                raise ApiError(
                    Code.RATE_LIMITED,
                    f"user {user_id} holds {usage.subscriptions} subscriptions on this server, "
                    f"the limit: end one first",
                    limit="max_subscriptions_per_user",
                )
            count, _ = usage.documents.get(key, (0, cost))
            if count == 0 and usage.subscription_cost + cost > self.max_subscription_cost:
                raise ApiError(
                    Code.RATE_LIMITED,
                    f"user {user_id}'s distinct subscription documents would cost "
                    f"{usage.subscription_cost + cost} per event; the limit is "
                    f"{self.max_subscription_cost}: subscribe with a document you already "
                    "use, or select fewer fields",
                    limit="max_subscription_cost_per_user",
                )
        except ApiError:
            self._forget_if_idle(user_id, usage)
            raise
        if count == 0:
            usage.subscription_cost += cost
        usage.documents[key] = (count + 1, cost)
        usage.subscriptions += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            usage.subscriptions -= 1
            left, document_cost = usage.documents[key]
            if left == 1:
                del usage.documents[key]
                usage.subscription_cost -= document_cost
            else:
                usage.documents[key] = (left - 1, document_cost)
            self._forget_if_idle(user_id, usage)

        return release
