"""Certificates made on the fly for the TLS tests (never a fixed key in the repository): self-signed ones by
`scripts/make-cert`'s own code, and a small CA with a leaf it signed for the CA-file path."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chat.certs import MadeCertificate, alternative_name, make_certificate, write_certificate
from chat.client.trust import fingerprint_of


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate and its key on disk, and the certificate's fingerprint."""

    cert: Path
    key: Path
    fingerprint: str


def self_signed(folder: Path, *names: str) -> CertFiles:
    """A self-signed certificate for `names` (default 127.0.0.1), as scripts/make-cert writes it."""
    made = make_certificate(list(names) or ["127.0.0.1"])
    cert, key = write_certificate(made, folder)
    return CertFiles(cert, key, made.fingerprint)


def ca_signed(folder: Path, *names: str) -> tuple[Path, CertFiles]:
    """A CA certificate (its PEM file) and a server certificate for `names` that it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign and crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alternative_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    made = MadeCertificate(
        leaf.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        fingerprint_of(leaf.public_bytes(serialization.Encoding.DER)),
    )
    cert, key_path = write_certificate(made, folder)
    return ca_path, CertFiles(cert, key_path, made.fingerprint)
