"""Who may connect and try to log in, per source address, so that one host cannot lock a LAN room out.

Addresses are counted by `address_key`: an IPv4 address as it is, an IPv6 address by its /64 (one host or one home
network usually owns a whole /64, and can pick any address in it), an IPv4-mapped IPv6 address as the IPv4 one.

Per key, `AddressBook` keeps the connections open now, those not logged in yet, a token bucket of new connections
per minute, one of failed logins per minute and one of new identities per hour, plus the time before which a login
may not be tried again after a failed proof. It takes the time as an argument and knows no sockets: the listener
asks `admit` on accept, tells `opened`, `logged_in` and `closed`, and the service asks `login_refusal` before
checking a proof, tells `login_failed` after a wrong one, and asks `new_identity` before it creates an identity for
a login without a known token. Each limit is 0 for none.

Why new identities are counted per address (docs/security.md, Nick squatting): every identity holds its nick for
`nick_hold` whatever it did, so a host that logs in with a new nick and quits, in a loop, would reserve nicks as fast
as it can connect. An address entry is kept while any of its buckets is refilling, so closing every connection does
not reset the count.

`max_clients` keeps a share for small hosts: once the server holds `max_clients` minus a tenth, only addresses with
fewer than `SMALL_HOST` connections get in, so a host that has taken many slots cannot take the last ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from chat.config import Config
from chat.core.limits import TokenBucket
from chat.protocol.errors import ErrorCode

SMALL_HOST = 4  # connections of an address that still gets one of the slots kept back near max_clients
FAILED_LOGIN_PAUSE = 1.0  # seconds before an address may try again after a failed proof


def address_limits(config: Config) -> AddressLimits:
    """The per-address limits of a configuration (`[limits]`, and `[server] max_clients`)."""
    limits = config.limits
    return AddressLimits(
        max_connections_per_address=limits.max_connections_per_address,
        max_unauthenticated_per_address=limits.max_unauthenticated_per_address,
        connections_per_minute_per_address=limits.connections_per_minute_per_address,
        logins_per_minute_per_address=limits.logins_per_minute_per_address,
        identities_per_hour_per_address=limits.identities_per_hour_per_address,
        max_clients=config.server.max_clients,
    )


def address_key(host: str) -> str:
    """The key an address is counted under: IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP address (a Unix socket path, a test's name): counted as itself
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class AddressLimits:
    """The per-address limits (config `[limits]`); 0 turns one off."""

    max_connections_per_address: int = 100
    max_unauthenticated_per_address: int = 20
    connections_per_minute_per_address: int = 600
    logins_per_minute_per_address: int = 20
    identities_per_hour_per_address: int = 100
    max_clients: int = 1000


@dataclass(slots=True)
class _Address:
    key: str
    open: int = 0
    unauthenticated: int = 0
    connects: TokenBucket | None = None
    failures: TokenBucket | None = None
    identities: TokenBucket | None = None
    paused_until: float = 0.0


@dataclass(slots=True)
class AddressBook:
    """The counts and buckets of every address with a connection open or a limit still running."""

    limits: AddressLimits
    total: int = 0
    _addresses: dict[str, _Address] = field(default_factory=dict)

    def admit(self, key: str, now: float) -> tuple[ErrorCode, str] | None:
        """Why a new connection from `key` is refused, or None to accept it (then call `opened`)."""
        limits = self.limits
        entry = self._addresses.get(key)
        count = entry.open if entry is not None else 0
        if limits.max_clients and self.total >= limits.max_clients:
            return ErrorCode.TOO_MANY_CLIENTS, f"the server has {self.total} clients"
        kept = limits.max_clients // 10
        if limits.max_clients and self.total >= limits.max_clients - kept and count >= SMALL_HOST:
            return ErrorCode.TOO_MANY_CLIENTS, f"the server is nearly full and your address has {count} connections"
        if limits.max_connections_per_address and count >= limits.max_connections_per_address:
            return (
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"your address has {count} connections open, the limit is {limits.max_connections_per_address}",
            )
        if (
            limits.max_unauthenticated_per_address
            and entry is not None
            and entry.unauthenticated >= limits.max_unauthenticated_per_address
        ):
            return (
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"your address has {entry.unauthenticated} connections not logged in, "
                f"the limit is {limits.max_unauthenticated_per_address}",
            )
        if limits.connections_per_minute_per_address:
            entry = self._entry(key)
            if entry.connects is None:
                rate = limits.connections_per_minute_per_address
                entry.connects = TokenBucket(rate / 60.0, rate, now)
            if not entry.connects.take(now):
                return (
                    ErrorCode.CONNECTING_TOO_FAST,
                    f"more than {limits.connections_per_minute_per_address} new connections a minute from your address",
                )
        return None

    def opened(self, key: str) -> str:
        """A connection from `key` was accepted; it is not logged in yet. Returns the key as the book keeps it
        (one string object shared by every connection of the address)."""
        entry = self._entry(key)
        entry.open += 1
        entry.unauthenticated += 1
        self.total += 1
        return entry.key

    def logged_in(self, key: str) -> None:
        """A connection from `key` logged in."""
        entry = self._addresses.get(key)
        if entry is not None and entry.unauthenticated > 0:
            entry.unauthenticated -= 1

    def closed(self, key: str, *, logged_in: bool, now: float) -> None:
        """A connection from `key` ended (`logged_in`: whether it had)."""
        entry = self._addresses.get(key)
        if entry is None:
            return
        entry.open -= 1
        if not logged_in and entry.unauthenticated > 0:
            entry.unauthenticated -= 1
        self.total -= 1
        self._forget_if_idle(key, entry, now)

    def login_refusal(self, key: str, now: float) -> tuple[ErrorCode, str] | None:
        """Why a login from `key` may not be tried now (too soon after a failed proof, or too many failed), or None."""
        entry = self._addresses.get(key)
        if entry is None:
            return None
        if now < entry.paused_until:
            return ErrorCode.TOO_MANY_LOGINS, f"a login failed from your address: wait {entry.paused_until - now:.1f} s"
        if entry.failures is not None and entry.failures.peek(now) < 1.0:
            return (
                ErrorCode.TOO_MANY_LOGINS,
                f"more than {self.limits.logins_per_minute_per_address} failed logins a minute from your address",
            )
        return None

    def login_failed(self, key: str, now: float) -> None:
        """A login from `key` gave a wrong proof: pause the address, and count it against its failed logins
        (neither when `logins_per_minute_per_address` is 0)."""
        rate = self.limits.logins_per_minute_per_address
        if rate:
            entry = self._entry(key)
            entry.paused_until = now + FAILED_LOGIN_PAUSE
            if entry.failures is None:
                entry.failures = TokenBucket(rate / 60.0, rate, now)
            entry.failures.take(now)

    def new_identity(self, key: str, now: float) -> tuple[ErrorCode, str] | None:
        """Why `key` may not have another new identity now, or None, counting this one (a login without a known
        token is about to create it; `identities_per_hour_per_address`, 0 for no limit)."""
        rate = self.limits.identities_per_hour_per_address
        if not rate:
            return None
        entry = self._entry(key)
        if entry.identities is None:
            entry.identities = TokenBucket(rate / 3600.0, rate, now)
        if entry.identities.take(now):
            return None
        return (
            ErrorCode.TOO_MANY_IDENTITIES,
            f"more than {rate} new identities an hour from your address: log in with your session token, "
            f"or wait {(1.0 - entry.identities.peek(now)) * 3600.0 / rate:.0f} s",
        )

    def connections_of(self, key: str) -> int:
        """Connections open from `key` now."""
        entry = self._addresses.get(key)
        return entry.open if entry is not None else 0

    def __len__(self) -> int:
        return len(self._addresses)

    def sweep(self, now: float) -> None:
        """Forget addresses with nothing open whose buckets are full again and whose pause is over (bounded memory)."""
        for key, entry in list(self._addresses.items()):
            self._forget_if_idle(key, entry, now)

    def _entry(self, key: str) -> _Address:
        entry = self._addresses.get(key)
        if entry is None:
            entry = self._addresses[key] = _Address(key)
        return entry

    def _forget_if_idle(self, key: str, entry: _Address, now: float) -> None:
        if entry.open > 0 or now < entry.paused_until:
            return
        for bucket in (entry.connects, entry.failures, entry.identities):
            if bucket is not None and bucket.peek(now) < bucket.burst:
                return
        del self._addresses[key]
