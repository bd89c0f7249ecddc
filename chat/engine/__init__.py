"""Engines: the state a cluster of servers must share (rooms fan-out, ids, the session registry)."""
