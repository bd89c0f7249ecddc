"""`ChatTestClient`: a `chat.client.Client` with assertions that wait for events, and the factory behind `chat_client`.

`expect()` takes the first event that matches, from those already skipped by earlier expectations or from the ones
still to come, and leaves every other event where it was: skipped events stay queued, in order, for a later
`expect()`, `recv()` or `async for`. So the order in which a test expects things need not be the order they arrive.
On timeout it fails with an AssertionError that lists what arrived instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from chat.client import Client, ClientClosed, ClientOptions, Connect, Event
from chat.testing.servers import LOOP_SCOPES_HELP, ExternalServer, check_factory_loop, check_same_loop

DEFAULT_TIMEOUT = 5.0
SHOWN_EVENTS = 12  # events listed in a failure message
SHOWN_CHARS = 160  # characters of each

E = TypeVar("E")
Predicate = Callable[[Any], object]

_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(ClientOptions))
_nicks = itertools.count(1)


def unique_name(prefix: str = "user") -> str:
    """A nick or room name no other test (nor an earlier run against the same server) has used: `alice-3f9a2c`."""
    return f"{prefix[:25]}-{secrets.token_hex(3)}"


def describe(event: object, limit: int = SHOWN_CHARS) -> str:
    """A one-line summary of an event: its type and the fields that are set, lists shown by their length."""
    fields = getattr(event, "__struct_fields__", None)
    if fields is None:
        text = repr(event)
    else:
        parts = []
        for name in fields:
            value = getattr(event, name)
            if value is None or name == "ts" or value == [] or value == {}:
                continue
            if isinstance(value, enum.Enum):
                value = value.value
            shown = f"[{len(value)} items]" if isinstance(value, list) and len(value) > 3 else repr(value)
            parts.append(f"{name}={shown}")
        text = f"{getattr(event, 'type', type(event).__name__)}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_wanted(kind: object, where: Predicate | None, fields: Mapping[str, object]) -> str:
    name = "any event" if kind is None else getattr(kind, "type", None) or getattr(kind, "__name__", str(kind))
    shown = ", ".join(f"{key}={value!r}" for key, value in fields.items())
    text = f"{name}({shown})" if shown else str(name)
    if where is not None:
        text += f" where {getattr(where, '__name__', repr(where))}"
    return text


def _matches(event: Event, kind: object, where: Predicate | None, fields: Mapping[str, object]) -> bool:
    if isinstance(kind, str):
        if event.type != kind:
            return False
    elif kind is not None and not isinstance(event, kind):  # type: ignore[arg-type]
        return False
    missing = object()
    if any(getattr(event, key, missing) != value for key, value in fields.items()):
        return False
    return where is None or bool(where(event))


class ChatTestClient(Client):
    """A `Client` (it is one: every request, `recv()` and `async for` work as usual) with `expect` and `expect_no`.

    `backlog` holds the events that arrived but were passed over by an `expect()`; `recv()` returns them first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backlog: deque[Event] = deque()

    @property
    def backlog(self) -> list[Event]:
        """Events received and not yet consumed, oldest first."""
        return list(self._backlog)

    async def recv(self, timeout: float | None = None) -> Event:
        if self._backlog:
            return self._backlog.popleft()
        return await super().recv(timeout)

    @overload
    async def expect(
        self, kind: type[E], where: Callable[[E], object] | None = None, /, *, timeout: float = ..., **fields: object
    ) -> E: ...

    @overload
    async def expect(
        self, kind: str | None = None, where: Predicate | None = None, /, *, timeout: float = ..., **fields: object
    ) -> Any: ...

    async def expect(
        self,
        kind: str | type[Any] | None = None,
        where: Predicate | None = None,
        /,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        **fields: object,
    ) -> Any:
        """The first event of `kind` (a type name like `"message"`, or an event class) whose attributes equal
        `fields` and for which `where(event)` is true: `await bob.expect("message", text="hi", sender="alice")`.

        Other events stay queued for later. AssertionError after `timeout` seconds, or if the client ends first,
        listing the events that arrived instead.
        """
        __tracebackhide__ = True  # pytest: a failure shows the test's line, not this method's source
        for event in self._backlog:
            if _matches(event, kind, where, fields):
                self._backlog.remove(event)
                return event
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                event = await super().recv(remaining)
            except TimeoutError:
                wanted = _describe_wanted(kind, where, fields)
                raise AssertionError(f"{self.nick}: no {wanted} within {timeout:g} s; {self._arrivals()}") from None
            except ClientClosed as exc:
                wanted = _describe_wanted(kind, where, fields)
                ended = f"{self.nick}: the client ended ({exc}) before {wanted}"
                raise AssertionError(f"{ended}; {self._arrivals()}") from None
            if _matches(event, kind, where, fields):
                return event
            self._backlog.append(event)

    async def expect_no(
        self,
        kind: str | type[Any] | None = None,
        where: Predicate | None = None,
        /,
        *,
        within: float = 0.2,
        **fields: object,
    ) -> None:
        """AssertionError if a matching event is queued or arrives within `within` seconds (which it always waits:
        absence can only be shown by waiting). Other events stay queued."""
        __tracebackhide__ = True
        try:
            event = await self.expect(kind, where, timeout=within, **fields)
        except AssertionError:
            return
        self._backlog.appendleft(event)
        raise AssertionError(f"{self.nick}: got {describe(event)}, expected none within {within:g} s")

    def _arrivals(self) -> str:
        if not self._backlog:
            return "nothing else arrived either"
        events = list(self._backlog)
        lines = [f"  {describe(event)}" for event in events[:SHOWN_EVENTS]]
        if len(events) > SHOWN_EVENTS:
            lines.append(f"  ... and {len(events) - SHOWN_EVENTS} more")
        what = "this event" if len(events) == 1 else f"these {len(events)} events"
        return f"{what} arrived instead (oldest first):\n" + "\n".join(lines)


async def open_client(
    server: Any,
    nick: str | None = None,
    *,
    join: str | Iterable[str] = (),
    session: str | None = None,
    since: int | None = None,
    **options: Any,
) -> ChatTestClient:
    """Connect a `ChatTestClient` to `server` (anything with `.host` and `.port`), log it in, and join `join` (a
    room or several).

    `options` are `connect()`'s (`secret`, `reconnect`, `backoff_initial`, ...); a test client reconnects within
    0.05 to 0.5 s unless told otherwise, and uses the server's secret when it has one and none is given.
    """
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        expected = ", ".join(sorted(_OPTION_NAMES | {"join", "session", "since"}))
        raise TypeError(f"chat_client got unexpected keyword arguments {sorted(unknown)}; it takes {expected}")
    check_same_loop(server)
    options.setdefault("backoff_initial", 0.05)
    options.setdefault("backoff_max", 0.5)
    config = getattr(server, "config", None)
    if "secret" not in options and config is not None and config.server.secret:
        options["secret"] = config.server.secret
    options["secret"] = options.get("secret") or None
    if nick is None:
        nick = unique_name(f"user{next(_nicks)}") if isinstance(server, ExternalServer) else f"user{next(_nicks)}"
    client_options = ClientOptions(**options)
    client = ChatTestClient(server.host, server.port, nick, session=session, since=since, options=client_options)
    try:
        await Connect(client)
    except TimeoutError:
        raise AssertionError(
            f"{nick} could not log in to {server.host}:{server.port} within {client.options.connect_timeout:g} s; if "
            f"that server runs in this process, it may be on an event loop that is not running; {LOOP_SCOPES_HELP}"
        ) from None
    try:
        for room in (join,) if isinstance(join, str) else join:
            await client.join(room)
    except BaseException:
        await client.close()
        raise
    return client


class ClientFactory:
    """`await chat_client(server, nick=None, join=(), **options)`; `aclose()` closes every client, newest first."""

    def __init__(self) -> None:
        self.clients: list[ChatTestClient] = []
        self._loop = asyncio.get_running_loop()

    async def __call__(self, server: Any, nick: str | None = None, **options: Any) -> ChatTestClient:
        check_factory_loop(self._loop, "chat_client")
        client = await open_client(server, nick, **options)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        errors: list[BaseException] = []
        for client in reversed(self.clients):
            try:
                await client.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
