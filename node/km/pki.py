"""A small certificate authority for a lab or demo network: node and SAE certificates.

Kx between key managers and ETSI GS QKD 014 between applications and their key manager both use
mutual TLS with certificates from one CA. A production network has its own PKI; a lab network,
the demo and the tests get theirs from :func:`make_pki` (``qkdnode pki``). Each certificate's
subject CN is the node name or SAE ID (that is how Kx and ETSI 014 identify the peer); node
certificates also name the node, ``localhost`` and 127.0.0.1 as subject alternative names so
that TLS host name checks pass on one machine. Private keys (ECDSA P-256) are written with
mode 0600; no existing file is ever overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertFiles", "make_pki"]

# A lab CA for a year; leaf certificates as long (re-run `qkdnode pki` to renew).
VALID_DAYS = 365


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _save(directory: Path, stem: str, cert: x509.Certificate,
          key: ec.EllipticCurvePrivateKey) -> CertFiles:
    files = CertFiles(directory / f"{stem}.pem", directory / f"{stem}.key")
    _write_new(files.key, key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), 0o600)
    _write_new(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def _builder(cn: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_pki(directory: str | Path, nodes: Sequence[str], saes: Iterable[str] = (), *,
             ca_name: str = "qkdnode lab CA", days: int = VALID_DAYS
             ) -> tuple[CertFiles, dict[str, CertFiles]]:
    """Creates a CA and a certificate for every node and SAE in ``directory``.

    Returns:
        The CA's files and, per node or SAE name, its files (``<name>.pem``, ``<name>.key``).

    Raises:
        FileExistsError: a file to be written exists already (nothing is overwritten; files
            written before the clash stay).
        ValueError: a name repeats or is empty.
    """
    names = [*nodes, *saes]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError("node and SAE names must be unique and non-empty")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name in ["ca", *names]:
        for suffix in (".pem", ".key"):
            if (out / f"{name}{suffix}").exists():
                raise FileExistsError(f"{out / (name + suffix)} exists; not overwriting it")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (_builder(ca_name, _name(ca_name), ca_key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca_files = _save(out, "ca", ca_cert, ca_key)
    issued = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = [x509.DNSName(name)]
        if name in nodes:
            alt += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (_builder(name, ca_cert.subject, key.public_key(), days)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        issued[name] = _save(out, name, cert, key)
    return ca_files, issued
