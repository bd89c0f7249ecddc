"""chat/protocol/messages.py: requests in, server frames out (docs/protocol.md 1, 2, 3 and 8, "Request errors")."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from chat.protocol.errors import ErrorCode, ProtocolViolation
from chat.protocol.frames import DEFAULT_MAX_HEADER, Frame, FrameDecoder
from chat.protocol.messages import (
    INT64_MAX,
    MAX_NESTING,
    REQUEST_TYPES,
    SERVER_TYPES,
    AwayChanged,
    ChangeNick,
    Error,
    FileCancel,
    FileCancelled,
    FileChunk,
    FileData,
    FileDone,
    FileEnd,
    FileGet,
    FileInfo,
    FileOffer,
    FileReady,
    FileStored,
    Hello,
    HistoryPage,
    HistoryQuery,
    Join,
    Joined,
    ListRooms,
    Login,
    Member,
    Members,
    Message,
    NickChanged,
    Part,
    Parted,
    Ping,
    Pong,
    Presence,
    PresenceEvent,
    Presences,
    QuickMessage,
    QuickOk,
    QuickSend,
    Quit,
    Request,
    RoomInfo,
    RoomList,
    Say,
    ServerFrame,
    ServerPing,
    ServerPong,
    SetAway,
    UdpInfo,
    Welcome,
    Who,
    Whois,
    WhoisInfo,
    decode_request,
    decode_server_frame,
    encode,
    encode_error,
    encode_header,
)

# --- strategies -------------------------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=20)  # anything UTF-8 can carry: no lone surrogates
non_empty_texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
int64s = st.integers(-INT64_MAX, INT64_MAX)
message_ids = st.integers(0, INT64_MAX)
refs = st.none() | texts | int64s
optional_texts = st.none() | texts
resumed_marks = st.none() | st.just(True)
client_ids = st.none() | st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)
caps_lists = st.none() | st.lists(texts, max_size=3)  # docs/protocol.md 10.1: login.caps and welcome.caps
page_limits = st.none() | st.integers(1, INT64_MAX)
json_scalars = st.none() | st.booleans() | int64s | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=12,
)
free_form_t = st.just(msgspec.UNSET) | json_values

REQUEST_STRATEGIES: dict[type[Request], st.SearchStrategy[Request]] = {
    Login: st.builds(
        Login,
        ref=refs,
        nick=texts,
        protocol=int64s,
        proof=optional_texts,
        session=optional_texts,
        since=st.none() | message_ids,
        caps=caps_lists,
    ),
    Ping: st.builds(Ping, ref=refs, t=free_form_t),
    Pong: st.builds(Pong, ref=refs, t=free_form_t),
    Quit: st.builds(Quit, ref=refs, reason=optional_texts),
    Join: st.builds(Join, ref=refs, room=texts, since=st.none() | message_ids, resumed=st.booleans()),
    Part: st.builds(Part, ref=refs, room=texts),
    Say: st.builds(Say, ref=refs, room=optional_texts, to=optional_texts, text=texts, cid=client_ids),
    HistoryQuery: st.builds(
        HistoryQuery,
        ref=refs,
        room=optional_texts,
        to=optional_texts,
        private=st.booleans(),
        before=st.none() | message_ids,
        after=st.none() | message_ids,
        limit=st.none() | st.integers(1, INT64_MAX),
    ),
    Who: st.builds(Who, ref=refs, room=texts, after=optional_texts, limit=page_limits),
    Whois: st.builds(Whois, ref=refs, nick=texts),
    SetAway: st.builds(SetAway, ref=refs, text=optional_texts),
    ChangeNick: st.builds(ChangeNick, ref=refs, nick=texts),
    ListRooms: st.builds(ListRooms, ref=refs, after=optional_texts),
    QuickSend: st.builds(
        QuickSend,
        ref=refs,
        to=optional_texts,
        room=optional_texts,
        text=texts,
        nudge=st.booleans(),
        seq=st.none() | st.integers(1, 2**32 - 1),
        cid=client_ids,
    ),
    FileOffer: st.builds(
        FileOffer,
        ref=refs,
        room=optional_texts,
        to=optional_texts,
        name=texts,
        size=st.integers(0, INT64_MAX),
        sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    ),
    FileChunk: st.builds(FileChunk, ref=refs, fid=st.text(min_size=1, max_size=64), offset=st.integers(0, INT64_MAX)),
    FileDone: st.builds(FileDone, ref=refs, fid=st.text(min_size=1, max_size=64)),
    FileGet: st.builds(FileGet, ref=refs, fid=st.text(min_size=1, max_size=64), offset=st.integers(0, INT64_MAX)),
    FileCancel: st.builds(FileCancel, ref=refs, fid=st.text(min_size=1, max_size=64)),
}
requests = st.one_of(*REQUEST_STRATEGIES.values())

messages = st.builds(
    Message,
    id=message_ids,
    room=optional_texts,
    to=optional_texts,
    sender=texts,
    text=texts,
    ts=st.integers(0, INT64_MAX),
    cid=st.none() | texts,
    file=st.none() | st.builds(FileInfo, fid=texts, name=texts, size=st.integers(0, INT64_MAX), sha256=texts),
)
SERVER_FRAME_STRATEGIES: dict[type[ServerFrame], st.SearchStrategy[ServerFrame]] = {
    Hello: st.builds(Hello, server=texts, protocol=st.integers(0, 10), auth=texts, nonce=texts),
    Welcome: st.builds(
        Welcome,
        nick=texts,
        session=texts,
        udp=st.builds(UdpInfo, port=st.integers(0, 65535), sid=st.integers(1, 2**53 - 1), key=texts),
        limits=st.builds(
            lambda other, page: {**other, **page},
            st.dictionaries(texts, int64s | st.floats(allow_nan=False, allow_infinity=False), max_size=4),
            st.fixed_dictionaries({}, optional={"members_page": st.integers(1, INT64_MAX)}),  # docs/protocol.md 10.4
        ),
        caps=caps_lists,
        ref=refs,
    ),
    Message: messages,
    Joined: st.builds(
        Joined,
        room=texts,
        members=st.lists(texts, max_size=3),
        messages=st.lists(messages, max_size=3),
        truncated=st.booleans(),
        member_count=st.none() | st.integers(0, INT64_MAX),
        ref=refs,
    ),
    Parted: st.builds(Parted, room=texts, ref=refs),
    Presence: st.builds(
        Presence,
        room=texts,
        nick=texts,
        event=texts,
        old=optional_texts,
        text=optional_texts,
        resumed=resumed_marks,
    ),
    Presences: st.builds(
        Presences,
        room=texts,
        events=st.lists(
            st.builds(
                PresenceEvent,
                nick=texts,
                event=texts,
                old=optional_texts,
                text=optional_texts,
                resumed=resumed_marks,
            ),
            min_size=1,
            max_size=4,
        ),
    ),
    HistoryPage: st.builds(
        HistoryPage,
        room=optional_texts,
        to=optional_texts,
        private=st.booleans(),
        messages=st.lists(messages, max_size=3),
        truncated=st.booleans(),
        ref=refs,
    ),
    Members: st.builds(
        Members,
        room=texts,
        members=st.lists(st.builds(Member, nick=texts, away=optional_texts), max_size=3),
        truncated=st.booleans(),
        count=st.just(msgspec.UNSET) | st.integers(0, INT64_MAX),
        next=st.just(msgspec.UNSET) | optional_texts,
        ref=refs,
    ),
    WhoisInfo: st.one_of(
        st.builds(
            WhoisInfo,
            nick=texts,
            online=st.just(True),
            rooms=st.lists(texts, max_size=3),
            away=optional_texts,
            idle=st.floats(0, 1e6, allow_nan=False).map(lambda seconds: round(seconds, 1)),
            connected=st.integers(0, 2**53),
            ref=refs,
        ),
        st.builds(WhoisInfo, nick=texts, online=st.just(False), seen=st.integers(0, 2**53), ref=refs),
    ),
    AwayChanged: st.builds(AwayChanged, text=optional_texts, ref=refs),
    NickChanged: st.builds(NickChanged, nick=texts, old=texts, ref=refs),
    RoomList: st.builds(
        RoomList,
        rooms=st.lists(st.builds(RoomInfo, room=texts, members=st.integers(0, 1000)), max_size=3),
        next=optional_texts,
        ref=refs,
    ),
    ServerPing: st.builds(ServerPing, t=free_form_t, ref=refs),
    ServerPong: st.builds(ServerPong, t=free_form_t, ref=refs),
    Error: st.builds(
        Error,
        code=st.sampled_from(list(ErrorCode)).map(str),
        message=texts,
        ref=refs,
        seq=st.none() | st.integers(1, 2**32 - 1),
    ),
    QuickMessage: st.builds(
        QuickMessage,
        qid=st.integers(1, 2**53 - 1),
        sender=texts,
        to=optional_texts,
        room=optional_texts,
        text=texts,
        nudge=st.booleans(),
        ts=st.integers(0, INT64_MAX),
    ),
    QuickOk: st.builds(QuickOk, qid=st.integers(1, 2**53 - 1), ref=refs),
    FileReady: st.builds(FileReady, fid=texts, offset=st.integers(0, INT64_MAX), ref=refs),
    FileStored: st.builds(FileStored, fid=texts, id=message_ids, ref=refs),
    FileData: st.builds(FileData, fid=texts, offset=st.integers(0, INT64_MAX)),
    FileEnd: st.builds(FileEnd, fid=texts, sha256=texts, size=st.integers(0, INT64_MAX), ref=refs),
    FileCancelled: st.builds(FileCancelled, fid=texts, ref=refs),
}
server_frames = st.one_of(*SERVER_FRAME_STRATEGIES.values())


def _refused(raw: bytes) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as caught:
        decode_request(raw)
    return caught.value


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    """A JSON value of `depth` nested arrays around `inner`."""
    return b"[" * depth + inner + b"]" * depth


def _ping_with_total_depth(total: int) -> bytes:
    """A ping whose document nests `total` levels: the header object is level 1, so `t` holds total - 1 arrays."""
    return b'{"type":"ping","ref":"r","t":' + _nested(total - 1) + b"}"


# --- decode_request: well-formed requests -----------------------------------------------------------------------


@settings(deadline=None)
@given(request=requests)
def test_every_request_type_round_trips_through_json(request: Request) -> None:
    decoded = decode_request(msgspec.json.encode(request))
    assert decoded == request
    assert type(decoded) is type(request)


def test_round_trip_strategy_builds_every_request_type() -> None:
    assert {cls.type for cls in REQUEST_STRATEGIES} == REQUEST_TYPES
    # docs/protocol.md 2 and 3: the starting contract's requests are all there.
    starting_contract = {"login", "ping", "pong", "quit", "join", "part", "say", "history", "who", "away", "nick"}
    assert REQUEST_TYPES.issuperset(starting_contract | {"rooms"})


def _fields_with_defaults(cls: type[msgspec.Struct]) -> list[tuple[str, Any]]:
    return [(f.name, f.default) for f in msgspec.structs.fields(cls) if f.default is not msgspec.NODEFAULT]


FIND_SETTINGS = settings(deadline=None, database=None, phases=[Phase.generate])  # the first example will do
NOT_ON_THE_WIRE = {(FileData, "data")}  # the payload, filled in by the reader: not a header field to round-trip
STRATEGY_FIELDS = [
    pytest.param(strategy, cls, name, default, id=f"{cls.__name__}.{name}")
    for table in (REQUEST_STRATEGIES, SERVER_FRAME_STRATEGIES)
    for cls, strategy in table.items()
    for name, default in _fields_with_defaults(cls)
    if (cls, name) not in NOT_ON_THE_WIRE
]


@pytest.mark.parametrize(("strategy", "cls", "name", "default"), STRATEGY_FIELDS)
def test_round_trip_strategies_give_every_optional_field_a_value_other_than_its_default(
    strategy: st.SearchStrategy[Any], cls: type, name: str, default: Any
) -> None:
    """The completeness check of fields: st.builds leaves a field with a default out unless told, so a new field
    (docs/protocol.md 10: caps, resumed, member_count, after, limit, count, next) would go untested without this."""
    found = find(strategy, lambda value: type(value) is cls and getattr(value, name) != default, settings=FIND_SETTINGS)
    assert getattr(found, name) != default


def test_round_trip_strategies_cover_the_extension_fields_of_protocol_section_10() -> None:
    """Section 10's fields, by name, so none of them can drop out of the structs and the strategies unnoticed."""
    expected = {
        Login: {"caps"},
        Join: {"resumed"},
        Who: {"after", "limit"},
        Welcome: {"caps"},
        Joined: {"member_count"},
        Members: {"count", "next"},
    }
    for cls, names in expected.items():
        assert names <= {name for name, _ in _fields_with_defaults(cls)}, cls
    assert Presences in SERVER_FRAME_STRATEGIES
    welcome = find(
        SERVER_FRAME_STRATEGIES[Welcome],
        lambda w: isinstance(w, Welcome) and "members_page" in w.limits,
        settings=FIND_SETTINGS,
    )
    assert isinstance(welcome, Welcome)


def test_decoded_request_answers_its_wire_type() -> None:
    request = decode_request(b'{"type":"join","room":"lobby","since":5,"ref":"a1"}')
    assert request == Join(room="lobby", since=5, ref="a1")
    assert request.type == "join"


def test_ping_without_t_keeps_t_absent_and_with_null_keeps_null() -> None:
    absent = decode_request(b'{"type":"ping"}')
    null = decode_request(b'{"type":"ping","t":null}')
    assert isinstance(absent, Ping) and absent.t is msgspec.UNSET
    assert isinstance(null, Ping) and null.t is None
    # docs/protocol.md 2.4: the answer carries the same `t`, absent staying absent.
    assert b'"t"' not in encode_header(ServerPong(t=absent.t))
    assert b'"t":null' in encode_header(ServerPong(t=null.t))


def test_ping_t_comes_back_unchanged_in_the_pong() -> None:
    raw_t = {"a": [1, 2.5, None, True, "ü"], "b": {"c": -(2**63 - 1)}}
    request = decode_request(json.dumps({"type": "ping", "t": raw_t}).encode())
    assert isinstance(request, Ping)
    pong = decode_server_frame(encode_header(ServerPong(t=request.t)))
    assert isinstance(pong, ServerPong)
    assert pong.t == raw_t


def test_whitespace_around_the_header_object_is_accepted() -> None:
    assert decode_request(b' \n{"type":"rooms"}\t ') == ListRooms()


# --- decode_request: classification of bad headers --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"{", b'{"type":"rooms"} trailing', b"{'type':'rooms'}"],
    ids=["empty", "text", "truncated", "trailing-bytes", "single-quotes"],
)
def test_header_that_is_not_json_is_bad_request(raw: bytes) -> None:
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'[{"type":"rooms"}]', b'"rooms"', b"1", b"null", b"true"],
    ids=["empty-list", "list", "string", "number", "null", "bool"],
)
def test_header_that_is_not_an_object_is_bad_request(raw: bytes) -> None:
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


def test_header_without_type_is_bad_request() -> None:
    violation = _refused(b'{"ref":"r1","room":"lobby"}')
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == "r1"


# Found by fuzz/fuzz_requests.py: the fast path for `say` took a header with a say's fields and no `type` for a say.
@pytest.mark.parametrize(
    "raw", [b'{"to":"o","text":"pk"}', b'{"room":"lobby","text":"hi","cid":"c1","ref":"r1"}', b'{"type":"","text":"x"}']
)
def test_a_header_with_the_fields_of_a_say_but_no_say_type_is_refused(raw: bytes) -> None:
    violation = _refused(raw)
    assert violation.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE)
    assert violation.code == (ErrorCode.UNKNOWN_TYPE if b'"type"' in raw else ErrorCode.BAD_REQUEST)


@pytest.mark.parametrize("kind", [b"1", b"null", b"true", b'["join"]', b'{"t":"join"}'])
def test_non_string_type_is_bad_request(kind: bytes) -> None:
    violation = _refused(b'{"type":' + kind + b',"ref":3}')
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == 3


@pytest.mark.parametrize("ref", ["r-17", 42, -(2**63 - 1), 2**63 - 1, ""])
def test_unknown_type_is_unknown_type_with_ref_kept(ref: str | int) -> None:
    violation = _refused(json.dumps({"type": "teleport", "ref": ref}).encode())
    assert violation.code == ErrorCode.UNKNOWN_TYPE
    assert violation.ref == ref
    assert "teleport" in violation.message


def test_type_names_are_case_sensitive() -> None:
    assert _refused(b'{"type":"JOIN","room":"lobby"}').code == ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"type":"join","room":5,"ref":"r"}', "room"),
        (b'{"type":"join","room":"lobby","since":"5","ref":"r"}', "since"),
        (b'{"type":"join","room":"lobby","since":1.0,"ref":"r"}', "since"),
        (b'{"type":"join","room":"lobby","since":-1,"ref":"r"}', "since"),
        (b'{"type":"login","nick":["a"],"protocol":1,"ref":"r"}', "nick"),
        (b'{"type":"login","nick":"a","protocol":"1","ref":"r"}', "protocol"),
        (b'{"type":"say","room":"lobby","text":null,"ref":"r"}', "text"),
        (b'{"type":"say","room":"lobby","text":"hi","cid":"","ref":"r"}', "cid"),
        (b'{"type":"say","room":"lobby","text":"hi","cid":"' + b"c" * 65 + b'","ref":"r"}', "cid"),
        (b'{"type":"history","room":"lobby","limit":0,"ref":"r"}', "limit"),
        (b'{"type":"history","room":"lobby","private":"yes","ref":"r"}', "private"),
        (b'{"type":"away","text":7,"ref":"r"}', "text"),
    ],
)
def test_field_of_the_wrong_type_is_bad_request_naming_the_field_with_ref_kept(raw: bytes, field: str) -> None:
    violation = _refused(raw)
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == "r"
    assert f"`$.{field}`" in violation.message


def test_missing_required_field_is_bad_request_naming_the_field() -> None:
    violation = _refused(b'{"type":"join","ref":7}')
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == 7
    assert "room" in violation.message


@pytest.mark.parametrize(
    ("raw", "request_type"),
    [
        (b'{"type":"login","nick":5,"protocol":1}', "login"),
        (b'{"type":"login","nick":"alice"}', "login"),
        (b'{"type":"ping","t":9223372036854775808}', "ping"),
        (b'{"type":"teleport"}', "teleport"),
        (b'{"type":7}', None),
        (b'{"nick":"alice"}', None),
        (b"[]", None),
        (b"\xff", None),
    ],
)
def test_refusal_carries_the_request_type_when_it_could_be_read(raw: bytes, request_type: str | None) -> None:
    # The server closes the connection for a malformed login only (docs/protocol.md 8), so it must know the type.
    assert _refused(raw).request_type == request_type


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"rooms","ref":true}',
        b'{"type":"rooms","ref":1.5}',
        b'{"type":"rooms","ref":null,"extra":1,"ref":[1]}',
        b'{"type":"teleport","ref":9223372036854775808}',
        b'{"type":"teleport","ref":{"a":1}}',
    ],
)
def test_a_ref_that_is_itself_malformed_is_not_echoed(raw: bytes) -> None:
    assert _refused(raw).ref is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"ping","t":NaN}',
        b'{"type":"ping","t":Infinity}',
        b'{"type":"ping","t":-Infinity}',
        b'{"type":"ping","t":[1e400]}',
        b'{"type":"ping","t":-1e400}',
    ],
    ids=["NaN", "Infinity", "-Infinity", "overflowing-float", "overflowing-negative-float"],
)
def test_nan_and_infinity_are_bad_request(raw: bytes) -> None:
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"say","room":"lobby","text":"\\ud800"}',
        b'{"type":"say","room":"lobby","text":"a\\udc00b"}',
        b'{"type":"say","room":"lobby","text":"\\ude00\\ud83d"}',
        b'{"type":"ping","t":{"\\ud800":1}}',
        b'{"type":"rooms","unknown":"\\udbff"}',
    ],
    ids=["lone-high", "lone-low", "reversed-pair", "in-a-key", "in-an-ignored-field"],
)
def test_lone_surrogate_escapes_are_bad_request(raw: bytes) -> None:
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


def test_escaped_surrogate_pair_is_one_character() -> None:
    assert decode_request(b'{"type":"say","room":"r","text":"\\ud83d\\ude00"}') == Say(room="r", text="\U0001f600")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"say","room":"lobby","text":"\xff"}',
        b'{"type":"say","room":"lobby","text":"\xc0\xaf"}',
        b'{"type":"say","room":"lobby","text":"\xed\xa0\x80"}',
        b'{"type":"say","room":"lobby","text":"\xf4\x90\x80\x80"}',
        b'{"type":"say","room":"lobby","text":"\xe4\xbd"}',
        b'{"type":"ping","t":"\xc3"}',
    ],
    ids=["invalid-byte", "overlong", "encoded-surrogate", "beyond-U+10FFFF", "truncated-sequence", "in-t"],
)
def test_invalid_utf8_is_bad_request(raw: bytes) -> None:
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"rooms","unknown":"\xc0\xaf"}',
        b'{"type":"rooms","\xff":1}',
    ],
    ids=["in-an-ignored-value", "in-an-ignored-key"],
)
def test_invalid_utf8_in_an_ignored_field_is_bad_request(raw: bytes) -> None:
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63 - 1), 0])
def test_integers_at_the_int64_bounds_are_accepted(value: int) -> None:
    assert decode_request(b'{"type":"ping","t":%d}' % value) == Ping(t=value)
    assert decode_request(b'{"type":"rooms","ref":%d}' % value) == ListRooms(ref=value)


BEYOND_INT64 = [2**63, -(2**63), 2**64 - 1, 2**64, -(2**64), 10**30, -(10**30)]


@pytest.mark.parametrize("value", BEYOND_INT64)
def test_integer_beyond_int64_in_since_is_bad_request(value: int) -> None:
    violation = _refused(b'{"type":"join","room":"lobby","since":%d,"ref":"r"}' % value)
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == "r"


@pytest.mark.parametrize("value", BEYOND_INT64)
def test_integer_beyond_int64_in_ref_is_bad_request(value: int) -> None:
    violation = _refused(b'{"type":"rooms","ref":%d}' % value)
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref is None


@pytest.mark.parametrize("value", BEYOND_INT64)
@pytest.mark.parametrize("template", [b"%d", b"[1,%d]", b'{"a":{"b":%d}}'], ids=["bare", "in-list", "in-object"])
def test_integer_beyond_int64_inside_ping_t_is_bad_request(value: int, template: bytes) -> None:
    violation = _refused(b'{"type":"ping","ref":"r","t":' + template % value + b"}")
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == "r"


@pytest.mark.parametrize("value", [2**63, -(2**63), 2**64])
def test_integer_beyond_int64_in_login_protocol_is_bad_request(value: int) -> None:
    assert _refused(b'{"type":"login","nick":"alice","protocol":%d}' % value).code == ErrorCode.BAD_REQUEST


def test_integer_beyond_int64_in_an_ignored_field_is_bad_request() -> None:
    assert _refused(b'{"type":"rooms","unknown":9223372036854775808}').code == ErrorCode.BAD_REQUEST


def test_nesting_is_counted_from_the_header_object_as_level_one() -> None:
    assert MAX_NESTING == 32
    # 32 levels in all: the header object, then 31 arrays in `t`.
    request = decode_request(_ping_with_total_depth(MAX_NESTING))
    assert isinstance(request, Ping)
    assert request.t == json.loads(_nested(MAX_NESTING - 1))


def test_nesting_deeper_than_32_levels_in_ping_t_is_bad_request() -> None:
    violation = _refused(_ping_with_total_depth(MAX_NESTING + 1))
    assert violation.code == ErrorCode.BAD_REQUEST
    assert violation.ref == "r"


def test_nesting_counts_objects_and_arrays_alike() -> None:
    def objects(depth: int, inner: bytes) -> bytes:
        return b'{"k":' * depth + inner + b"}" * depth

    assert isinstance(decode_request(b'{"type":"pong","t":' + objects(31, b"1") + b"}"), Pong)
    assert isinstance(decode_request(b'{"type":"pong","t":' + objects(30, b"[]") + b"}"), Pong)
    assert _refused(b'{"type":"pong","t":' + objects(32, b"1") + b"}").code == ErrorCode.BAD_REQUEST
    assert _refused(b'{"type":"pong","t":' + objects(31, b"[]") + b"}").code == ErrorCode.BAD_REQUEST


def test_nesting_deeper_than_32_levels_in_an_ignored_field_is_bad_request() -> None:
    assert _refused(b'{"type":"rooms","unknown":' + _nested(MAX_NESTING) + b"}").code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "template",
    [
        b'{"type":"ping","t":%s}',
        b'{"type":"rooms","unknown":%s}',
        b'{"type":"teleport","unknown":%s}',
        b"%s",
    ],
    ids=["in-ping-t", "in-an-ignored-field", "in-an-unknown-type", "whole-header"],
)
def test_deeply_nested_header_within_the_size_limit_is_bad_request_not_a_crash(template: bytes) -> None:
    raw = template % _nested(5000, b"")
    assert len(raw) <= DEFAULT_MAX_HEADER
    assert _refused(raw).code == ErrorCode.BAD_REQUEST


json_tokens = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b'"type"',
        b'"ping"',
        b'"join"',
        b'"t"',
        b'"ref"',
        b'"room"',
        b'"since"',
        b"1",
        b"-1",
        b"9223372036854775808",
        b"1e400",
        b"NaN",
        b"null",
        b"true",
        b'"\\ud800"',
        b'"\xff"',
        b'"x"',
        b" ",
    ]
)


@given(raw=st.binary(max_size=200) | st.lists(json_tokens, max_size=60).map(b"".join))
def test_arbitrary_bytes_raise_nothing_but_protocol_violation(raw: bytes) -> None:
    try:
        request = decode_request(raw)
    except ProtocolViolation as violation:
        assert violation.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE)
    else:
        assert isinstance(request, Request)


@given(value=json_values, kind=st.sampled_from(sorted(REQUEST_TYPES)) | texts)
def test_any_json_object_with_a_type_is_decoded_or_refused_as_a_protocol_violation(value: Any, kind: str) -> None:
    raw = msgspec.json.encode({"type": kind, "ref": "r", "room": value, "t": value, "text": value, "nick": value})
    try:
        decode_request(raw)
    except ProtocolViolation as violation:
        assert violation.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE)
        assert violation.ref == "r"


# --- server frames ----------------------------------------------------------------------------------------------


def test_round_trip_strategy_builds_every_server_frame_type() -> None:
    assert {cls.type for cls in SERVER_FRAME_STRATEGIES} == SERVER_TYPES


@settings(deadline=None)
@given(frame=server_frames)
def test_every_server_frame_round_trips_through_encode_and_decode(frame: ServerFrame) -> None:
    [decoded_frame] = FrameDecoder().feed(encode(frame))
    assert decoded_frame.payload == b""
    decoded = decode_server_frame(decoded_frame.header)
    assert decoded == frame
    assert decoded.type == frame.type


def test_encode_carries_the_payload_after_the_header() -> None:
    frame = Error(code="bad_request", message="no")
    assert FrameDecoder().feed(encode(frame, b"\x00data")) == [Frame(encode_header(frame), b"\x00data")]


def test_message_puts_the_sender_on_the_wire_as_from() -> None:
    header = json.loads(encode_header(Message(id=7, room="lobby", sender="alice", text="hi", ts=1, cid="c1")))
    assert header == {"type": "message", "id": 7, "room": "lobby", "from": "alice", "text": "hi", "ts": 1, "cid": "c1"}


def test_message_from_the_wire_fills_sender() -> None:
    raw = b'{"type":"message","id":1,"to":"bob","from":"alice","text":"psst","ts":2}'
    assert decode_server_frame(raw) == Message(id=1, to="bob", sender="alice", text="psst", ts=2)


def test_away_answer_writes_null_text_when_back() -> None:
    assert json.loads(encode_header(AwayChanged(text=None))) == {"type": "away", "text": None}
    assert json.loads(encode_header(AwayChanged(text="lunch", ref=3))) == {"type": "away", "text": "lunch", "ref": 3}


def test_members_write_null_away_for_members_who_are_here() -> None:
    frame = Members(room="lobby", members=[Member(nick="alice", away=None), Member(nick="bob", away="out")])
    assert json.loads(encode_header(frame))["members"] == [
        {"nick": "alice", "away": None},
        {"nick": "bob", "away": "out"},
    ]


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (Message(id=1, room="lobby", sender="a", text="x", ts=0), {"type", "id", "room", "from", "text", "ts"}),
        (Error(code="bad_request", message="m"), {"type", "code", "message"}),
        (Parted(room="lobby"), {"type", "room"}),
        (Presence(room="r", nick="n", event="join"), {"type", "room", "nick", "event"}),
        (HistoryPage(room="r", messages=[], truncated=False), {"type", "room", "messages", "truncated"}),
        (ServerPing(), {"type"}),
    ],
)
def test_fields_left_at_their_default_are_omitted(frame: ServerFrame, expected: set[str]) -> None:
    assert set(json.loads(encode_header(frame))) == expected


def test_ref_is_written_when_set() -> None:
    assert json.loads(encode_header(Parted(room="r", ref="x1")))["ref"] == "x1"
    assert json.loads(encode_header(Parted(room="r", ref=0)))["ref"] == 0


def test_encode_error_builds_an_error_frame_with_ref() -> None:
    [frame] = FrameDecoder().feed(encode_error(ErrorCode.NOT_IN_ROOM, "join first", ref="q"))
    assert json.loads(frame.header) == {"type": "error", "code": "not_in_room", "message": "join first", "ref": "q"}


def test_non_ascii_is_written_as_utf8_without_escapes() -> None:
    text = "héllo Привет 你好 مرحبا 😀"
    header = encode_header(Message(id=1, room="lobby", sender="zoë", text=text, ts=0))
    assert text.encode("utf-8") in header
    assert "zoë".encode() in header
    assert b"\\u" not in header


@given(text=st.text(st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=40))
def test_any_non_ascii_text_is_written_verbatim_as_utf8(text: str) -> None:
    header = encode_header(Message(id=1, room="r", sender="s", text=text, ts=0))
    assert text.encode("utf-8") in header
    assert b"\\u" not in header
