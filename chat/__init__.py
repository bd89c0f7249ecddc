"""chat: a LAN chat room server, its async client library and a terminal client."""

__version__ = "0.1.0"
