"""The listener-agnostic core: requests in, domain events out to `Peer`s (see ports.py)."""
