"""The chat server: TCP sessions, rooms, fan-out, limits, the UDP endpoint and the server's lifecycle."""
