"""`scripts/make-cert`: a self-signed certificate for a LAN host, for `[server] tls_cert` and `tls_key`.

    scripts/make-cert [--out DIR] [--days N] [NAME_OR_IP ...]     (default names: this host's name and 127.0.0.1)

Writes `DIR/chat-cert.pem` and `DIR/chat-key.pem` (the key readable by its owner only, written through
`write_private_file`) and prints the certificate's SHA-256 fingerprint, the value a client pins with
`--fingerprint` or compares with what trust on first use recorded. Each name goes into the subject alternative
names, as an IP address when it parses as one, else as a DNS name. An ECDSA P-256 key: small, fast to handshake, and
accepted by every TLS 1.2 client. Needs the `cryptography` package (the `tls` extra, in the dev tools too).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chat.client.identity import write_private_file
from chat.client.trust import fingerprint_of

DEFAULT_DAYS = 825  # the longest validity Apple's TLS clients accept for a server certificate


@dataclass(frozen=True, slots=True)
class MadeCertificate:
    """A certificate and its key in PEM, and the certificate's fingerprint (`sha256:...`)."""

    cert_pem: bytes
    key_pem: bytes
    fingerprint: str


def alternative_name(name: str) -> x509.GeneralName:
    """An IP address entry for an address, a DNS name entry for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_certificate(
    names: Sequence[str], *, days: int = DEFAULT_DAYS, now: datetime.datetime | None = None
) -> MadeCertificate:
    """A self-signed server certificate for `names` (the first is also the common name)."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a little clock skew between hosts
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alternative_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return MadeCertificate(certificate.public_bytes(serialization.Encoding.PEM), key_pem, fingerprint_of(der))


def write_certificate(made: MadeCertificate, folder: Path) -> tuple[Path, Path]:
    """Write `chat-cert.pem` and `chat-key.pem` (0600) into `folder`; the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "chat-cert.pem", folder / "chat-key.pem"
    write_private_file(key_path, made.key_pem)
    write_private_file(cert_path, made.cert_pem)
    cert_path.chmod(0o644)  # the certificate is public; only the key is secret
    return cert_path, key_path


def main(argv: Sequence[str] | None = None) -> int:
    """Make, write and describe a certificate; 0, or 1 with the reason when it cannot be written."""
    parser = argparse.ArgumentParser(
        prog="make-cert", description="Make a self-signed TLS certificate for chat-server."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME_OR_IP",
        help="host names and addresses (default: this host's name and 127.0.0.1)",
    )
    parser.add_argument("--out", type=Path, default=Path("data/tls"), help="folder to write into (default data/tls)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
    args = parser.parse_args(argv)
    names = list(dict.fromkeys(args.names or [socket.gethostname(), "127.0.0.1"]))
    made = make_certificate(names, days=args.days)
    try:
        cert_path, key_path = write_certificate(made, args.out)
    except OSError as exc:
        print(f"make-cert: cannot write into {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"certificate {cert_path} for {', '.join(names)}, valid {args.days} days")
    print(f"private key {key_path} (mode 0600)")
    print(f"fingerprint {made.fingerprint}")
    print(f"serve it:   chat-server --tls-cert {cert_path} --tls-key {key_path}")
    print(f"pin it:     chat-client --tls --fingerprint {made.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
