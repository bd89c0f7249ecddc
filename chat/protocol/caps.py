"""Protocol extensions a client may ask for at login (docs/protocol.md 10): their names and their fixed numbers.

A client that asks for none sees protocol 1 exactly as sections 1-8 describe it; each extension changes only what
its own section says, and only for the connection that negotiated it.
"""

from __future__ import annotations

from collections.abc import Iterable

PRESENCE_BATCH = "presence-batch"  # docs/protocol.md 10.2: a turn's presence events of a room as one `presences` frame
LAZY_MEMBERS = "lazy-members"  # docs/protocol.md 10.4: `joined` has the first page of members; `who` pages
SUPPORTED = (PRESENCE_BATCH, LAZY_MEMBERS)
MEMBERS_PAGE = 100  # docs/protocol.md 10.4: members in `joined`, and the most in one `who` page


def negotiate(asked: Iterable[str]) -> list[str]:
    """The caps of `asked` this server supports, in the order asked, each once; unknown ones are dropped."""
    supported = set(SUPPORTED)
    seen: dict[str, None] = {}
    for cap in asked:
        if cap in supported:
            seen[cap] = None
    return list(seen)
