"""Which TLS certificate a client trusts for a server: a CA file, a pinned fingerprint, or the one seen first.

`TlsTrust` is made once per client (`connect(tls=..., cafile=..., fingerprint=...)`) and used for every connection
it makes, the reconnections too, so a resume is held to the same trust as the first login. Four ways, by what was
given:

    tls=SSLContext            the caller's context decides (plus the pin, if a fingerprint is given too)
    cafile=F                  verified against the CAs of F, host name checked, as a browser would
    fingerprint="sha256:..."  only the certificate with that SHA-256 fingerprint (the leaf's DER), nothing else
    tls=True alone            trust on first use: the fingerprint seen first is recorded in the known-hosts file
                              and required from then on

The fingerprint is checked right after the handshake, before the first frame is read or written, so a refused
server has seen nothing of the login (no proof, no session token). A refusal is `UntrustedCertificate` and is never
retried by itself: the message names both fingerprints and how to accept the new one.

The known-hosts file (default `$XDG_STATE_HOME/chat/known_hosts`, the terminal client's state folder) has one line
per server, `HOST:PORT sha256:HEX`, and `#` comments; it is rewritten whole and atomically, readable by its owner
only (`write_private_file`). Two clients recording two new servers at the same moment may lose one of the records;
that server is then trusted on first use once more.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from chat.client.errors import KnownHostsError, UntrustedCertificate
from chat.client.identity import write_private_file

logger = logging.getLogger(__name__)

PREFIX = "sha256:"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
_HEX_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_HEADER = "# chat known hosts: HOST:PORT sha256:FINGERPRINT, one a line (delete a line to trust that server anew)\n"


def fingerprint_of(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as this project writes it: `sha256:` and 64 hex digits."""
    return PREFIX + hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """A fingerprint as typed or pasted (`sha256:AB:CD:..`, `SHA256 Fingerprint=AB:CD:..`, bare hex) in the form
    `fingerprint_of` gives; ValueError if it is not 32 bytes of hex."""
    value = text.strip().lower().removeprefix("sha256 fingerprint=").removeprefix(PREFIX).replace(":", "")
    if not _HEX_FINGERPRINT.fullmatch(value):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (sha256: and 64 hex digits, colons allowed)")
    return PREFIX + value


def server_address(host: str, port: int) -> str:
    """`HOST:PORT`, IPv6 in brackets: the key of a known-hosts line."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def state_directory(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/chat`, or `~/.local/state/chat` when it is unset or not absolute (XDG Base Directory)."""
    env = os.environ if environ is None else environ
    value = env.get("XDG_STATE_HOME", "")
    if value and Path(value).is_absolute():
        return Path(value) / "chat"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "chat"


def default_known_hosts(environ: Mapping[str, str] | None = None) -> Path:
    """Where trust on first use records servers unless told otherwise: `known_hosts` in the state folder."""
    return state_directory(environ) / "known_hosts"


class KnownHosts:
    """The known-hosts file: server address -> the fingerprint trusted for it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        """Every entry; none if the file does not exist. KnownHostsError for a line that is not an entry."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise KnownHostsError(f"cannot read the known-hosts file {self.path}: {exc}") from None
        entries: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError("not two fields")
                entries[parts[0]] = parse_fingerprint(parts[1])
            except ValueError:
                raise KnownHostsError(
                    f"{self.path} line {number} is not `HOST:PORT sha256:FINGERPRINT`: {line.strip()!r}; "
                    "mend or delete it"
                ) from None
        return entries

    def lookup(self, address: str) -> str | None:
        """The fingerprint trusted for `address` (`server_address()`), or None if it was never seen."""
        return self.load().get(address)

    def remember(self, address: str, fingerprint: str) -> None:
        """Record (or replace) the fingerprint trusted for `address`; the folder is made, private, if need be."""
        entries = self.load()
        entries[address] = fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = "".join(f"{key} {value}\n" for key, value in sorted(entries.items()))
        write_private_file(self.path, (_HEADER + body).encode("utf-8"))


class TrustMode(StrEnum):
    """How the server's certificate is judged (module doc)."""

    CONTEXT = "the caller's SSL context"
    CA = "the CA file"
    PINNED = "the pinned fingerprint"
    FIRST_USE = "trust on first use"


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful check found: the certificate's fingerprint, how it was trusted, and whether it was just
    recorded (the first connection to this server: compare the fingerprint with the server's by another way)."""

    fingerprint: str
    mode: TrustMode
    first_use: bool = False


@dataclass(frozen=True, slots=True)
class TlsTrust:
    """The TLS context of a client's connections and the check of the certificate each one meets."""

    context: ssl.SSLContext
    mode: TrustMode
    pinned: str | None = None
    known_hosts: KnownHosts | None = None
    cafile: str | None = None

    @classmethod
    def build(
        cls,
        tls: bool | ssl.SSLContext,
        *,
        cafile: str | os.PathLike[str] | None = None,
        fingerprint: str | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
    ) -> TlsTrust | None:
        """The trust `connect()` was asked for, or None for a plain connection (no TLS asked, no cafile, no pin).

        ValueError for a fingerprint that is not one, or a CA file given together with a context of one's own.
        """
        pinned = parse_fingerprint(fingerprint) if fingerprint else None
        if isinstance(tls, ssl.SSLContext):
            if cafile is not None:
                raise ValueError("cafile= goes into your own SSL context: pass one or the other")
            return cls(tls, TrustMode.CONTEXT, pinned=pinned)
        if not (tls or cafile or pinned):
            return None
        if cafile is not None:
            context = ssl.create_default_context(cafile=os.fspath(cafile))
            context.minimum_version = MINIMUM_VERSION
            return cls(context, TrustMode.CA, pinned=pinned, cafile=os.fspath(cafile))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = MINIMUM_VERSION
        context.check_hostname = False  # the fingerprint is the check: a LAN host's certificate names what it likes
        context.verify_mode = ssl.CERT_NONE
        if pinned is not None:
            return cls(context, TrustMode.PINNED, pinned=pinned)
        path = Path(known_hosts) if known_hosts is not None else default_known_hosts()
        return cls(context, TrustMode.FIRST_USE, known_hosts=KnownHosts(path))

    def check(self, host: str, port: int, certificate: bytes | None) -> Verified:
        """Judge the certificate (DER) the server showed on a connection to `host:port`, after the handshake and
        before anything is sent; UntrustedCertificate (or KnownHostsError) refuses it."""
        address = server_address(host, port)
        if certificate is None:
            raise UntrustedCertificate(
                f"{address} showed no TLS certificate", address=address, expected=self.pinned, found=None
            )
        found = fingerprint_of(certificate)
        if self.pinned is not None:
            if found != self.pinned:
                raise UntrustedCertificate(
                    f"the TLS certificate of {address} is not the pinned one: expected {self.pinned}, "
                    f"the server showed {found}; if the server's certificate was really replaced, pass the new "
                    "fingerprint",
                    address=address,
                    expected=self.pinned,
                    found=found,
                )
            return Verified(found, TrustMode.PINNED)
        if self.known_hosts is None:
            return Verified(found, self.mode)
        known = self.known_hosts.lookup(address)
        if known is None:
            return self._first_use(address, found)
        if known != found:
            raise UntrustedCertificate(
                f"WARNING: THE TLS CERTIFICATE OF {address} HAS CHANGED. It was {known} and is now {found}. "
                "Someone may be intercepting the connection, or the server got a new certificate: ask its admin "
                f"for the fingerprint. To accept the new one, delete the line of {address} in {self.known_hosts.path} "
                f"or connect with the fingerprint {found}. Nothing was sent to the server.",
                address=address,
                expected=known,
                found=found,
            )
        return Verified(found, TrustMode.FIRST_USE)

    def _first_use(self, address: str, found: str) -> Verified:
        """No fingerprint recorded for this server yet: record the one it showed, and say so."""
        assert self.known_hosts is not None
        try:
            self.known_hosts.remember(address, found)
        except OSError as exc:  # still encrypted; the next connection trusts on first use again
            logger.warning("could not record %s in %s: %s", address, self.known_hosts.path, exc)
        logger.warning("first TLS connection to %s: trusting its certificate %s from now on", address, found)
        return Verified(found, TrustMode.FIRST_USE, first_use=True)

    def verification_failed(self, host: str, port: int, exc: ssl.SSLCertVerificationError) -> UntrustedCertificate:
        """The CA verification (or the caller's context) refused the server's certificate during the handshake."""
        address = server_address(host, port)
        against = f"the CA file {self.cafile}" if self.cafile else "the SSL context given"
        why = exc.verify_message or exc.reason or str(exc)
        return UntrustedCertificate(
            f"the TLS certificate of {address} does not verify against {against}: {why}",
            address=address,
            expected=None,
            found=None,
        )
