"""Replies that carry a list (`rooms`, `members`, the messages of `joined` and `history`) cut to fit under the
server's header limit (docs/protocol.md 1.10: never over 1 MiB), without encoding the reply more than once.

Why it can be done item by item: a JSON reply is its envelope (the reply with an empty list) plus, for n items,
their encodings and the n - 1 commas between them; JSON puts nothing else around an element. So each item is
encoded once to learn its size, the sizes are added up, and the list stops before the item that would pass the
limit. The reply itself is encoded once, when it is written. Cutting by re-encoding the whole reply until it fits
costs a page of long messages several megabytes of encoding per request (docs/security.md, Replies under the
frame limit).

`ENVELOPE_SLACK` bytes are kept back for what a cut adds once the list is chosen: `"truncated":true` where the
envelope was measured with `false` costs nothing, but a `next` cursor names the last item (a name of at most 32
characters of at most 4 bytes each, plus its key: well under 256 bytes).

Pure: no I/O, no clock; the caller brings the encoder (`size`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

ENVELOPE_SLACK = 256


def list_budget(envelope: int, limit: int) -> int:
    """Bytes left for a list's items (their encodings and the commas between them) in a reply of at most `limit`
    bytes whose envelope (the reply with an empty list) encodes to `envelope` bytes."""
    return limit - envelope - ENVELOPE_SLACK


def fit(items: Iterable[T], size: Callable[[T], int], budget: int) -> tuple[list[T], bool]:
    """The longest prefix of `items` whose encodings, comma-separated, take at most `budget` bytes, and whether an
    item was left out (the list was cut).

    `size(item)` is the length of the item's encoding; it is called once per item taken and once for the first
    item left out, and nothing after that item is read (so `items` may be a lazy generator of a long list)."""
    taken: list[T] = []
    used = -1  # n items take n - 1 commas
    for item in items:
        used += size(item) + 1
        if used > budget:
            return taken, True
        taken.append(item)
    return taken, False
