"""Per-address admission (chat/core/admission.py), driven by explicit times: no sockets, no clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chat.core.admission import FAILED_LOGIN_PAUSE, SMALL_HOST, AddressBook, AddressLimits, address_key
from chat.protocol.errors import ErrorCode


def book(**limits: int) -> AddressBook:
    return AddressBook(AddressLimits(**limits))


def open_many(addresses: AddressBook, key: str, count: int, now: float = 0.0) -> None:
    for _ in range(count):
        assert addresses.admit(key, now) is None
        addresses.opened(key)


def test_ipv4_counts_as_itself_ipv6_by_its_slash_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("192.168.1.7") == "192.168.1.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:10.0.0.5") == "10.0.0.5"
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_one_address_is_held_to_its_connections_while_another_still_gets_in() -> None:
    addresses = book(max_connections_per_address=3, max_clients=1000, connections_per_minute_per_address=0)
    open_many(addresses, "10.0.0.1", 3)
    refusal = addresses.admit("10.0.0.1", 0.0)
    assert refusal is not None and refusal[0] is ErrorCode.TOO_MANY_CONNECTIONS
    assert addresses.admit("10.0.0.2", 0.0) is None
    addresses.closed("10.0.0.1", logged_in=True, now=1.0)
    assert addresses.admit("10.0.0.1", 1.0) is None


def test_connections_not_logged_in_have_their_own_limit() -> None:
    addresses = book(max_unauthenticated_per_address=2, connections_per_minute_per_address=0)
    open_many(addresses, "10.0.0.1", 2)
    refusal = addresses.admit("10.0.0.1", 0.0)
    assert refusal is not None and refusal[0] is ErrorCode.TOO_MANY_CONNECTIONS and "not logged in" in refusal[1]
    addresses.logged_in("10.0.0.1")
    assert addresses.admit("10.0.0.1", 0.0) is None


def test_new_connections_per_minute_refill_with_time() -> None:
    addresses = book(connections_per_minute_per_address=60, max_connections_per_address=0)
    for _ in range(60):
        assert addresses.admit("10.0.0.1", 0.0) is None
    refusal = addresses.admit("10.0.0.1", 0.0)
    assert refusal is not None and refusal[0] is ErrorCode.CONNECTING_TOO_FAST
    assert addresses.admit("10.0.0.1", 1.0) is None, "one a second comes back"
    assert addresses.admit("10.0.0.2", 0.0) is None, "another address has its own bucket"


def test_near_max_clients_only_small_hosts_get_the_slots_kept_back() -> None:
    addresses = book(
        max_clients=100, max_connections_per_address=0, max_unauthenticated_per_address=0,
        connections_per_minute_per_address=0,
    )  # fmt: skip
    open_many(addresses, "10.0.0.66", 90)  # the big host reaches max_clients minus a tenth
    refusal = addresses.admit("10.0.0.66", 0.0)
    assert refusal is not None and refusal[0] is ErrorCode.TOO_MANY_CLIENTS
    for host in range(10):  # ten small hosts fill the last tenth, each below SMALL_HOST
        open_many(addresses, f"10.0.1.{host}", 1)
    assert addresses.connections_of("10.0.1.0") < SMALL_HOST
    refusal = addresses.admit("10.0.2.1", 0.0)
    assert refusal is not None and refusal[0] is ErrorCode.TOO_MANY_CLIENTS, "full now"


def test_a_failed_proof_pauses_the_address_and_too_many_failures_lock_it_for_a_while() -> None:
    addresses = book(logins_per_minute_per_address=3)
    now = 0.0
    assert addresses.login_refusal("10.0.0.1", now) is None
    addresses.login_failed("10.0.0.1", now)
    refusal = addresses.login_refusal("10.0.0.1", now + FAILED_LOGIN_PAUSE / 2)
    assert refusal is not None and refusal[0] is ErrorCode.TOO_MANY_LOGINS
    assert addresses.login_refusal("10.0.0.2", now) is None, "only that address waits"
    for _ in range(2):
        now += FAILED_LOGIN_PAUSE
        assert addresses.login_refusal("10.0.0.1", now) is None
        addresses.login_failed("10.0.0.1", now)
    now += FAILED_LOGIN_PAUSE
    refusal = addresses.login_refusal("10.0.0.1", now)
    assert refusal is not None and "failed logins a minute" in refusal[1]
    assert addresses.login_refusal("10.0.0.1", now + 20.0) is None, "3 a minute: one back after 20 s"


def test_addresses_with_nothing_open_and_full_buckets_are_forgotten() -> None:
    addresses = book(connections_per_minute_per_address=60)
    open_many(addresses, "10.0.0.1", 2)
    for _ in range(2):
        addresses.closed("10.0.0.1", logged_in=False, now=0.0)
    assert len(addresses) == 1, "its bucket is still refilling"
    addresses.sweep(10.0)
    assert len(addresses) == 0


def test_new_identities_stop_at_the_burst_and_come_back_at_the_hourly_rate() -> None:
    addresses = book(identities_per_hour_per_address=60, connections_per_minute_per_address=0)
    open_many(addresses, "10.0.0.1", 1)
    assert [addresses.new_identity("10.0.0.1", 0.0) for _ in range(60)] == [None] * 60
    refusal = addresses.new_identity("10.0.0.1", 0.0)
    assert refusal is not None and refusal[0] is ErrorCode.TOO_MANY_IDENTITIES
    assert "wait 60 s" in refusal[1], "60 an hour: one a minute"
    assert addresses.new_identity("10.0.0.2", 0.0) is None, "another address has its own count"
    assert addresses.new_identity("10.0.0.1", 59.0) is not None
    assert addresses.new_identity("10.0.0.1", 61.0) is None
    assert addresses.new_identity("10.0.0.1", 61.0) is not None


def test_closing_every_connection_does_not_reset_the_count_of_new_identities() -> None:
    addresses = book(identities_per_hour_per_address=2, connections_per_minute_per_address=0)
    open_many(addresses, "10.0.0.1", 1)
    assert addresses.new_identity("10.0.0.1", 0.0) is None and addresses.new_identity("10.0.0.1", 0.0) is None
    addresses.closed("10.0.0.1", logged_in=True, now=1.0)
    addresses.sweep(100.0)
    assert len(addresses) == 1, "its identity bucket is refilling: the address is remembered"
    open_many(addresses, "10.0.0.1", 1, now=100.0)
    assert addresses.new_identity("10.0.0.1", 100.0) is not None
    addresses.closed("10.0.0.1", logged_in=True, now=100.0)
    addresses.sweep(4000.0)
    assert len(addresses) == 0, "full again after an hour: forgotten"


def test_zero_new_identities_an_hour_means_no_limit() -> None:
    addresses = book(identities_per_hour_per_address=0)
    assert all(addresses.new_identity("10.0.0.1", 0.0) is None for _ in range(10_000))
    assert len(addresses) == 0


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["open", "login", "close"]), st.integers(0, 3)), max_size=80))
def test_counts_never_go_negative_and_total_is_the_sum_of_open(steps: list[tuple[str, int]]) -> None:
    addresses = book(max_connections_per_address=5, max_unauthenticated_per_address=3, max_clients=12)
    live: dict[int, list[bool]] = {}  # host -> logged-in flag of each open connection
    for now, (action, host) in enumerate(steps):
        key = f"10.0.0.{host}"
        if action == "open" and addresses.admit(key, float(now)) is None:
            addresses.opened(key)
            live.setdefault(host, []).append(False)
        elif action == "login" and False in live.get(host, []):
            addresses.logged_in(key)
            live[host][live[host].index(False)] = True
        elif action == "close" and live.get(host):
            addresses.closed(key, logged_in=live[host].pop(), now=float(now))
        assert addresses.total == sum(len(flags) for flags in live.values()) <= 12
        for other, flags in live.items():
            assert addresses.connections_of(f"10.0.0.{other}") == len(flags) <= 5
            assert flags.count(False) <= 3
