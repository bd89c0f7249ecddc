"""Write the seed corpus of every fuzz target (fuzz/corpus/<target>/) from the protocol's own structs.

Run it again after a request type, a datagram kind or a body changes: `.venv/bin/python fuzz/make_seeds.py`. It
replaces the seeds it writes (named by what they hold) and leaves the other files of each folder alone: inputs the
fuzzer found and `scripts/fuzz --merge` kept there.
"""

from __future__ import annotations

from pathlib import Path

from chat.protocol import datagrams as dg
from chat.protocol import messages as wire
from chat.protocol.frames import encode_frame

CORPUS = Path(__file__).resolve().parent / "corpus"
KEY = bytes(range(32))  # fuzz_datagrams.KEY: the seeds verify with it
SHA = "0" * 64

REQUESTS: list[wire.Request] = [
    wire.Login(nick="alice", protocol=1, ref="r1"),
    wire.Login(nick="bob", protocol=1, proof="ab" * 32, session="tok", since=120, caps=["presence-batch"], ref=2),
    wire.Ping(t=1764607200000, ref=-(2**63 - 1)),
    wire.Ping(t={"a": [1, 2.5, None, True, "x"]}),
    wire.Pong(t="x"),
    wire.Quit(reason="bye"),
    wire.Join(room="lobby", since=118, ref=7),
    wire.Join(room="Lobby", resumed=True),
    wire.Part(room="lobby", ref=8),
    wire.Say(room="lobby", text="héllo", cid="c-1"),
    wire.Say(to="bob", text="psst\n\tok", ref=3),
    wire.HistoryQuery(room="lobby", before=119, limit=20, ref=11),
    wire.HistoryQuery(private=True, after=130, limit=100),
    wire.HistoryQuery(to="bob", after=40),
    wire.Who(room="lobby", ref=3),
    wire.Who(room="lobby", after="bob", limit=2),
    wire.SetAway(text="lunch", ref=5),
    wire.SetAway(text=None),
    wire.ChangeNick(nick="robert", ref=9),
    wire.ListRooms(ref=4),
    wire.QuickSend(to="bob", text="hi", nudge=False, seq=3, cid="q-1", ref=8),
    wire.QuickSend(room="lobby", text="快", nudge=True),
    wire.FileOffer(room="lobby", name="a.txt", size=5, sha256=SHA, ref=1),
    wire.FileChunk(fid="f1", offset=0),
    wire.FileDone(fid="f1"),
    wire.FileGet(fid="f1", offset=3),
    wire.FileCancel(fid="f1"),
]
# Headers the decoder must refuse, each for another rule of docs/protocol.md 1.4.
REFUSED = {
    "not-json": b'{"type":"ping"',
    "not-object": b'["ping"]',
    "no-type": b'{"ref":1}',
    "say-without-type": b'{"to":"o","text":"pk"}',  # taken for a say by the fast path (tests/test_messages.py)
    "unknown-type": b'{"type":"shout","ref":"r"}',
    "int-beyond-int64": b'{"type":"ping","t":9223372036854775808}',
    "nested-33": b'{"type":"ping","t":' + b"[" * 32 + b"]" * 32 + b"}",
    "nested-1500": b'{"type":"ping","t":' + b"[" * 1500 + b"]" * 1500 + b"}",
    "bad-ref": b'{"type":"ping","ref":1.5}',
    "bad-utf8": b'{"type":"say","room":"a","text":"\xff"}',
    "lone-surrogate": b'{"type":"say","room":"a","text":"\\ud800"}',
}
ACCEPTED = {"say-extra-field": b' {"type":"say","room":"a","text":"x","extra":{"k":[1]}} '}  # the general path
BODIES: dict[dg.Kind, list[dg.Body | None]] = {
    dg.Kind.HELLO: [None, dg.HelloBody(seq=1)],
    dg.Kind.QUICK: [
        dg.QuickRequest(to="bob", text="hi", cid="q-1"),
        dg.QuickRequest(room="lobby", text="shake", nudge=True),
        dg.QuickDelivery(qid=1843276455411712, sender="alice", to="bob", text="hi", ts=1764607200000),
    ],
    dg.Kind.ACK: [dg.AckBody(seq=3), dg.AckBody(seq=4, code="nick_offline")],
    dg.Kind.PING: [dg.PingBody(t=[1, {"x": None}]), None],
    dg.Kind.PONG: [dg.PongBody(t=1, server_ts=1764607200000)],
    dg.Kind.TYPING: [dg.TypingRequest(to="bob"), dg.TypingNotice(sender="alice", room="lobby")],
}


def write(folder: str, name: str, data: bytes) -> None:
    path = CORPUS / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def request_seeds() -> dict[str, bytes]:
    missing = wire.REQUEST_TYPES - {r.type for r in REQUESTS}
    assert not missing, f"no seed for {sorted(missing)}"
    seeds: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for request in REQUESTS:
        number = counts[request.type] = counts.get(request.type, 0) + 1
        seeds[f"{request.type}-{number}"] = wire.encode_header(request)
    seeds.update(ACCEPTED)
    seeds.update({f"refused-{name}": raw for name, raw in REFUSED.items()})
    return seeds


def frame_seeds(headers: dict[str, bytes]) -> dict[str, bytes]:
    """fuzz_frames inputs: a byte saying how the stream is cut, then frames."""
    seeds = {
        name: b"\x00" + encode_frame(raw, b"data" if name.startswith("file_chunk") else b"")
        for name, raw in headers.items()
    }
    stream = b"".join(encode_frame(raw) for raw in list(headers.values())[:6])
    seeds["stream-whole"] = b"\x00" + stream
    seeds["stream-cut"] = b"\x05" + stream
    seeds["stream-then-too-large"] = b"\x03" + stream + b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"{}"
    seeds["empty-header"] = b"\x00" + b"\x00" * 8
    seeds["payload-too-large"] = b"\x00" + b"\x00\x00\x00\x02\xff\xff\xff\xff" + b"{}"
    seeds["incomplete"] = b"\x07" + encode_frame(b'{"type":"ping"}', b"xyz")[:-2]
    return seeds


def datagram_seeds() -> dict[str, bytes]:
    assert set(BODIES) == set(dg.Kind), f"no seed for {set(dg.Kind) - set(BODIES)}"
    seeds: dict[str, bytes] = {}
    for kind, bodies in BODIES.items():
        for number, body in enumerate(bodies, 1):
            raw = b"" if body is None else dg.encode_body(body)
            seeds[f"{kind.name.lower()}-{number}"] = dg.encode_datagram(kind, 7, number, raw, KEY)
    # the RecursionError that escaped decode_body (tests/test_datagrams.py): nesting near msgspec's limit
    seeds["ping-deep"] = dg.encode_datagram(dg.Kind.PING, 7, 9, b'{"t":' + b"[" * 1100, KEY)
    seeds["max-size"] = dg.encode_datagram(dg.Kind.PING, 2**64 - 1, 2**32 - 1, b" " * dg.MAX_BODY, KEY)
    return seeds


def main() -> None:
    headers = request_seeds()
    for name, raw in headers.items():
        write("requests", name, raw)
    for name, raw in frame_seeds(headers).items():
        write("frames", name, raw)
    for name, raw in datagram_seeds().items():
        write("datagrams", name, raw)
    print(f"seeds written under {CORPUS}")


if __name__ == "__main__":
    main()
