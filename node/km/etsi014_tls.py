"""Mutual TLS for the ETSI GS QKD 014 interface, and the SAE identity a client certificate names.

The server refuses, in the TLS handshake, every client without a certificate issued by the
configured CA (``CERT_REQUIRED``), so no HTTP request reaches the application from an unknown
peer. The SAE ID of a client is the **subject common name (CN)** of its certificate: the SAE's
operator has the CA issue a certificate whose CN is exactly the SAE ID the KME is configured
with. A certificate with no CN, or with more than one, identifies no SAE (answered with 401).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["make_client_ssl_context", "make_server_ssl_context", "sae_id_from_peercert"]

PathLike = str | Path


def make_server_ssl_context(ca: PathLike, cert: PathLike, key: PathLike) -> ssl.SSLContext:
    """A server context for mutual TLS: TLS 1.2 or later, client certificates required.

    Args:
        ca: PEM file of the CA (or CAs) whose client certificates are accepted.
        cert: PEM file of this KME's certificate (its chain may follow it in the file).
        key: PEM file of the certificate's private key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return ctx


def make_client_ssl_context(ca: PathLike, cert: PathLike | None = None,
                            key: PathLike | None = None, *,
                            check_hostname: bool = True) -> ssl.SSLContext:
    """A client context that checks the KME's certificate against ``ca`` and presents its own.

    Args:
        ca: PEM file of the CA that issued the KME's certificate.
        cert: PEM file of the SAE's certificate (None: present none, which a KME refuses).
        key: PEM file of its private key (None: the key is in ``cert``).
        check_hostname: match the KME's certificate against the host name connected to.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(certfile=str(cert), keyfile=None if key is None else str(key))
    return ctx


def sae_id_from_peercert(peercert: Mapping[str, Any] | None) -> str | None:
    """The SAE ID a verified peer certificate names: its one subject CN; None if there is none.

    Args:
        peercert: :meth:`ssl.SSLSocket.getpeercert` of a verified certificate (a dict whose
            ``subject`` is a tuple of relative distinguished names of ``(type, value)`` pairs).
    """
    if not peercert:
        return None
    names = [value for rdn in peercert.get("subject", ()) for (kind, value) in rdn
             if kind == "commonName"]
    if len(names) != 1 or not names[0]:
        return None
    return str(names[0])
