"""Storage: the SQLite history of messages, identities, nick holds and files.

records (the values), schema (versions and migrations), history (HistoryStore: every statement, synchronous),
sqlite (AsyncStore: the store for the event loop, on a writer and a reader thread), backup (online copies).
"""
