"""The async client library: the one way to talk to a chat server from Python.

    async with connect("127.0.0.1", 7777, nick="alice") as client:
        await client.join("lobby")
        await client.say("hi", room="lobby")
        async for event in client:
            ...

See `chat.client.client` for what a client promises across lost connections, and `chat.client.events` for the
events it delivers.
"""

from chat.client.client import Client, ClientOptions, ClientState, Connect, connect
from chat.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionLost,
    KnownHostsError,
    LoginRefused,
    ProtocolError,
    ServerError,
    TlsTrustError,
    UntrustedCertificate,
)
from chat.client.events import ConnectionEvent, ConnectionState, Event, ReplayedMessage
from chat.client.resume import Backoff, ResumeState
from chat.client.udp import UdpTimings
from chat.protocol.messages import (
    AwayChanged,
    Error,
    HistoryPage,
    Joined,
    Member,
    Members,
    Message,
    NickChanged,
    Parted,
    Presence,
    RoomInfo,
    RoomList,
    WhoisInfo,
)

__all__ = [
    "AwayChanged",
    "Backoff",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientOptions",
    "ClientState",
    "Connect",
    "ConnectionEvent",
    "ConnectionLost",
    "ConnectionState",
    "Error",
    "Event",
    "HistoryPage",
    "Joined",
    "KnownHostsError",
    "LoginRefused",
    "Member",
    "Members",
    "Message",
    "NickChanged",
    "Parted",
    "Presence",
    "ProtocolError",
    "ReplayedMessage",
    "ResumeState",
    "RoomInfo",
    "RoomList",
    "ServerError",
    "TlsTrustError",
    "UdpTimings",
    "UntrustedCertificate",
    "WhoisInfo",
    "connect",
]
