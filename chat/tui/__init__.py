"""The terminal client (`chat-client`): a full-screen prompt_toolkit app on top of `chat.client`.

model       what is shown, as plain data (pure: no prompt_toolkit, no asyncio)
render      safe text: control and bidi characters made visible, widths in cells, wrapping
commands    the slash commands: table, parsing, completion
state       the XDG state file (session token, highest ids shown) and the log's place
controller  the client library's events and the user's commands, applied to the model
actions     one handler per slash command
transfers   a running /send or /get as plain data: progress, rate, ETA (pure)
paths       local files: what may be sent, where a download goes, path completion
files       /send and /get while they run: tasks, progress, cancellation, notices
layout      the panes and the style
keys        the key bindings
app         the Application and `main`
"""
