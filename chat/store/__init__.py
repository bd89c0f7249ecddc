"""Storage: the SQLite history of messages, identities and nick holds."""
