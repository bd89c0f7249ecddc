"""The protocol core: frames, messages, names, auth and errors.

Nothing here touches sockets, asyncio or the clock: bytes and values in, values and bytes out.
"""
