"""The terminal client's model (chat/tui/model.py), driven directly: no terminal, no event loop, a fake clock."""

from __future__ import annotations

from chat.protocol.messages import FileInfo, Message
from chat.tui.model import (
    ChatModel,
    Delivery,
    InputHistory,
    Kind,
    LineKind,
    find_mentions,
    split_long,
)

NOW = 1_764_607_200.0


def model(nick: str = "alice") -> ChatModel:
    return ChatModel(nick, "127.0.0.1:7777", lambda: NOW)


def room_message(id: int, text: str, sender: str = "bob", room: str = "lobby", cid: str | None = None) -> Message:
    return Message(id=id, room=room, sender=sender, text=text, ts=int(NOW * 1000) + id, cid=cid)


def private_message(id: int, text: str, sender: str, to: str, cid: str | None = None) -> Message:
    return Message(id=id, to=to, sender=sender, text=text, ts=int(NOW * 1000) + id, cid=cid)


def texts(m: ChatModel, kind: Kind = Kind.ROOM, name: str = "lobby") -> list[str]:
    conversation = m.find(kind, name)
    assert conversation is not None
    return [line.text for line in conversation.lines]


def test_a_message_is_shown_once_however_often_it_arrives() -> None:
    m = model()
    m.open_room("lobby")
    assert m.add_message(room_message(1, "hi")) is not None
    assert m.add_message(room_message(1, "hi")) is None
    m.add_history(m.open_room("lobby"), [room_message(1, "hi")], older=True)
    assert texts(m) == ["hi"]


def test_messages_for_a_room_that_is_not_open_are_dropped() -> None:
    m = model()
    assert m.add_message(room_message(1, "hi", room="elsewhere")) is None
    assert m.conversations == []


def test_room_names_fold_and_take_the_servers_spelling() -> None:
    m = model()
    m.open_room("lobby")
    m.add_message(room_message(1, "hi", room="Lobby"))
    assert m.find(Kind.ROOM, "LOBBY") is m.find(Kind.ROOM, "lobby")
    assert m.conversations[0].name == "Lobby"


def test_an_own_message_is_pending_then_acknowledged_by_its_echo_without_a_second_line() -> None:
    m = model()
    lobby = m.open_room("lobby")
    line = m.add_pending(lobby, "hello", "c1")
    assert line.delivery is Delivery.PENDING and line.id is None
    added = m.add_message(room_message(7, "hello", sender="alice", cid="c1"))
    assert added is not None and not added.new
    assert line.delivery is Delivery.ACKED and line.id == 7
    assert m.add_message(room_message(7, "hello", sender="alice", cid="c1")) is None
    assert texts(m) == ["hello"]


def test_an_acknowledged_message_moves_above_a_lower_id_that_arrived_while_it_was_pending() -> None:
    m = model()
    lobby = m.open_room("lobby")
    m.add_message(room_message(1, "first"))
    m.add_pending(lobby, "mine", "c1")
    m.add_message(room_message(3, "after mine"))
    m.add_message(room_message(2, "stored after mine"))
    m.add_message(room_message(4, "mine", sender="alice", cid="c1"))
    assert [line.id for line in lobby.lines] == [1, 2, 3, 4]


def test_a_refused_message_is_marked_with_the_reason() -> None:
    m = model()
    lobby = m.open_room("lobby")
    line = m.add_pending(lobby, "x" * 5000, "c1")
    m.fail(lobby, "c1", "text is too long")
    assert line.delivery is Delivery.FAILED and line.reason == "text is too long"


def test_a_message_said_again_after_a_restart_but_already_shown_drops_its_pending_copy() -> None:
    m = model()
    lobby = m.open_room("lobby")
    m.add_message(room_message(5, "hello", sender="alice", cid="c1"))
    m.add_pending(lobby, "hello", "c1")
    assert m.add_message(room_message(5, "hello", sender="alice", cid="c1")) is None
    assert [(line.text, line.id) for line in lobby.lines] == [("hello", 5)]


def test_history_goes_in_id_order_above_newer_lines() -> None:
    m = model()
    lobby = m.open_room("lobby")
    m.add_message(room_message(10, "ten"))
    m.add_history(lobby, [room_message(3, "three"), room_message(1, "one")], older=True)
    assert texts(m) == ["one", "three", "ten"]
    assert lobby.oldest == 1 and lobby.highest == 10


def test_a_join_replay_goes_above_the_notice_that_came_with_it() -> None:
    m = model()
    lobby = m.open_room("lobby")
    m.notice("you joined lobby", lobby, kind=LineKind.JOIN)
    m.add_message(room_message(1, "old"), live=False)
    m.add_message(room_message(2, "older but newer"), live=False)
    m.add_message(room_message(3, "live"))
    assert texts(m) == ["old", "older but newer", "you joined lobby", "live"]


def test_unread_counts_and_mentions_belong_to_conversations_not_shown() -> None:
    m = model()
    lobby, dev = m.open_room("lobby"), m.open_room("dev")
    m.switch(lobby)
    m.add_message(room_message(1, "plain", room="dev"))
    added = m.add_message(room_message(2, "ALICE: look", room="dev"))
    assert added is not None and added.bell and added.line.mention
    assert (dev.unread, dev.mentioned) == (2, True)
    m.add_message(room_message(3, "in the room shown"))
    assert lobby.unread == 0
    m.switch(dev)
    assert (dev.unread, dev.mentioned) == (0, False)


def test_history_and_own_messages_neither_count_nor_ring() -> None:
    m = model()
    lobby, dev = m.open_room("lobby"), m.open_room("dev")
    m.switch(lobby)
    replayed = m.add_message(room_message(1, "alice!", room="dev"), live=False)
    own = m.add_message(room_message(2, "alice here", sender="alice", room="dev"))
    assert replayed is not None and not replayed.bell
    assert own is not None and not own.bell and not own.line.mention
    assert dev.unread == 0


def test_a_private_message_opens_a_conversation_with_the_other_party_and_rings() -> None:
    m = model()
    m.switch(m.open_room("lobby"))
    added = m.add_message(private_message(1, "psst", sender="bob", to="alice"))
    assert added is not None and added.bell
    mine = m.add_message(private_message(2, "yes?", sender="alice", to="bob"))
    assert mine is not None and mine.conversation is added.conversation
    assert [c.name for c in m.conversations] == ["lobby", "bob"]
    assert added.conversation.kind is Kind.PRIVATE


def test_rooms_are_listed_before_private_conversations() -> None:
    m = model()
    m.open_room("lobby")
    m.open_private("bob")
    m.open_room("dev")
    assert [(c.kind, c.name) for c in m.conversations] == [
        (Kind.ROOM, "lobby"),
        (Kind.ROOM, "dev"),
        (Kind.PRIVATE, "bob"),
    ]


def test_the_unread_marker_goes_above_the_first_message_after_what_was_seen() -> None:
    m = model()
    lobby, dev = m.open_room("lobby"), m.open_room("dev")
    m.switch(lobby)
    m.add_message(room_message(1, "seen"))
    m.switch(dev)  # leaving lobby remembers id 1 as read
    m.add_message(room_message(2, "unseen"))
    m.add_message(room_message(3, "unseen too"))
    m.switch(lobby)
    assert lobby.read_marker == 1
    assert lobby.first_unread_index() == 1


def test_scrolled_up_the_conversation_shown_counts_what_arrives_below() -> None:
    m = model()
    lobby = m.open_room("lobby")
    m.switch(lobby)
    lobby.scroll = 5
    m.add_message(room_message(1, "new"))
    assert lobby.new_below == 1 and lobby.unread == 0


def test_presence_keeps_the_member_list_in_order_with_away_texts() -> None:
    m = model()
    m.open_room("lobby")
    m.set_members("lobby", [("alice", None), ("bob", None)])
    m.presence("lobby", "carol", "join")
    m.presence("lobby", "bob", "nick", old="bob")
    m.presence("lobby", "robert", "nick", old="bob")
    m.presence("lobby", "robert", "away", text="lunch")
    m.presence("lobby", "carol", "quit")
    lobby = m.conversations[0]
    assert [(member.nick, member.away) for member in lobby.members.values()] == [("alice", None), ("robert", "lunch")]
    assert [line.kind for line in lobby.lines] == [LineKind.JOIN, LineKind.NICK, LineKind.AWAY, LineKind.PART]


def test_an_own_nick_change_renames_us_and_later_echoes_are_still_ours() -> None:
    m = model()
    lobby = m.open_room("lobby")
    m.set_members("lobby", [("alice", None), ("bob", None)])
    m.set_own_nick("alicia")
    assert [member.nick for member in lobby.members.values()] == ["alicia", "bob"]
    m.add_pending(lobby, "renamed", "c1")
    m.add_message(room_message(1, "renamed", sender="alicia", cid="c1"))
    assert lobby.lines[0].delivery is Delivery.ACKED
    assert m.nicks() == ["bob"]


def test_actions_are_messages_starting_with_slash_me() -> None:
    m = model()
    m.open_room("lobby")
    added = m.add_message(room_message(1, "/me waves"))
    assert added is not None
    assert (added.line.kind, added.line.text) == (LineKind.ACTION, "waves")


def test_mentions_are_whole_words_in_any_case() -> None:
    assert find_mentions("Alice, hi", "alice") == [(0, 5)]
    assert find_mentions("hi alice.", "alice") == [(3, 8)]
    assert find_mentions("malice alice_b alice-x", "alice") == []
    assert find_mentions("@alice: ok", "alice") == [(1, 6)]


def test_closing_the_conversation_shown_shows_its_neighbour() -> None:
    m = model()
    lobby, dev = m.open_room("lobby"), m.open_room("dev")
    m.switch(dev)
    m.close(dev)
    assert m.current is lobby
    m.close(lobby)
    assert m.current.kind is Kind.STATUS


def test_scrollback_is_capped_and_older_lines_can_come_back() -> None:
    m = ChatModel("alice", "server", lambda: NOW, max_lines=10)
    lobby = m.open_room("lobby")
    for index in range(1, 26):
        m.add_message(room_message(index, f"m{index}"))
    assert len(lobby.lines) == 10
    assert lobby.oldest == 16 and lobby.has_older
    assert m.add_history(lobby, [room_message(15, "m15")], older=True) == 1


def test_input_history_browses_back_and_forth_and_keeps_the_draft() -> None:
    history = InputHistory()
    for entry in ("one", "two", "two", "three"):
        history.add(entry)
    assert history.entries == ["one", "two", "three"]
    assert history.previous("draft") == "three"
    assert history.previous("three") == "two"
    assert history.previous("two") == "one"
    assert history.previous("one") is None
    assert history.next() == "two"
    assert history.next() == "three"
    assert history.next() == "draft"
    assert history.next() is None


def test_notices_without_any_conversation_go_to_the_status_conversation() -> None:
    m = model()
    m.notice_everywhere("cannot reach the server")
    assert m.current.kind is Kind.STATUS
    assert [line.text for line in m.current.lines] == ["cannot reach the server"]


def test_quick_messages_are_lines_without_ids_with_their_own_delivery() -> None:
    from chat.protocol.messages import QuickMessage

    m = model()
    m.switch(m.open_room("lobby"))
    bob = m.open_private("bob")
    line = m.add_pending_quick(bob, "desk?", "q1")
    m.quick_acknowledged(bob, "q1", "udp")
    assert (line.kind, line.delivery, line.via, line.id) == (LineKind.QUICK, Delivery.ACKED, "udp", None)
    refused = m.add_pending_quick(bob, "nudge", "q2", nudge=True)
    m.fail(bob, "q2", "nick_offline")
    assert refused.delivery is Delivery.FAILED
    added = m.add_quick(QuickMessage(qid=1, sender="bob", to="alice", text="nudge", nudge=True, ts=0))
    assert added is not None and added.bell and added.conversation is bob and bob.unread == 1
    assert m.add_quick(QuickMessage(qid=2, sender="bob", room="elsewhere", text="x", ts=0)) is None


def file_message(id: int, name: str, fid: str, sender: str = "bob", size: int = 10) -> Message:
    info = FileInfo(fid=fid, name=name, size=size, sha256="0" * 64)
    return Message(id=id, room="lobby", sender=sender, text=name, ts=int(NOW * 1000) + id, file=info)


def test_a_file_message_is_a_file_line_and_its_file_is_remembered_most_recent_first() -> None:
    m = model()
    m.open_room("lobby")
    added = m.add_message(file_message(7, "alice.txt", "aa" * 16))
    assert added is not None
    line = added.line
    assert (line.kind, line.text, line.mention) == (LineKind.FILE, "alice.txt", False)
    assert line.file == m.files["aa" * 16].info
    assert not added.bell, "a file named after you is not a mention"
    lobby = m.find(Kind.ROOM, "lobby")
    assert lobby is not None
    m.add_history(lobby, [file_message(3, "old.bin", "ab" * 16)], older=True)
    m.add_message(file_message(9, "new.bin", "ac" * 16))
    assert [info.name for info in m.recent_files()] == ["new.bin", "alice.txt", "old.bin"]
    m.clear(lobby)
    assert len(m.files) == 3, "/get still knows the files of a cleared pane"


def test_files_are_found_by_a_unique_start_of_their_fid() -> None:
    m = model()
    m.open_room("lobby")
    m.add_message(file_message(1, "a", "6c1f" + "0" * 28))
    m.add_message(file_message(2, "b", "6c2a" + "0" * 28))
    assert [info.name for info in m.files_matching("6C")] == ["b", "a"]
    assert [info.name for info in m.files_matching("6c1")] == ["a"]
    assert m.files_matching("") == [] and m.files_matching("ff") == []


def test_a_long_text_is_split_at_blanks_and_a_long_word_between_grapheme_clusters() -> None:
    assert split_long("aaa bbb ccc", 7) == ["aaa bbb", "ccc"]
    assert split_long("short", 10) == ["short"]
    family = "👨\u200d👩\u200d👧\u200d👦"  # 7 code points, one cluster
    pieces = split_long("x" * 5 + family * 2, 12)
    assert pieces == ["x" * 5 + family, family]
    assert all(len(piece) <= 12 for piece in pieces)
