"""DICOM TLS: the server's :class:`ssl.SSLContext` from ``[tls]`` (PS3.15 Annex B.9).

The BCP 195 secure transport connection profile (RFC 9325): TLS 1.2 at least, and for TLS 1.2
only the suites with forward secrecy and authenticated encryption (ECDHE or DHE key exchange,
AES-GCM); TLS 1.3's suites are all of that kind and stay as OpenSSL offers them. No compression,
no renegotiation. A file that cannot be loaded, or a node certificate out of its validity
period, is a :class:`node.settings.SettingsError` naming its setting, so ``sro-decoder serve``
stops at start-up with that name.
"""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path

from node.settings import SettingsError, TlsSettings

#: TLS 1.2 suites of BCP 195 (RFC 9325 section 4.2), OpenSSL names, preferred first
BCP195_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
))
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: a node certificate that expires sooner than this is said at start-up
EXPIRY_WARNING_DAYS = 30

log = logging.getLogger("node.dimse.tls")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _check_validity(certificate: Path, now: float | None = None) -> None:
    """The node's own certificate is within its validity period (RFC 5280 section 4.1.2.5):
    one that has expired, or is not valid yet, fails every handshake, so it stops start-up
    naming its dates; one that expires within :data:`EXPIRY_WARNING_DAYS` is said at start."""
    try:  # the standard library's PEM decoder (the one ssl.getpeercert() uses)
        decoded = ssl._ssl._test_decode_cert(str(certificate))  # type: ignore[attr-defined]
        not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except Exception:  # loaded above: only its dates are unread, and that is said
        log.warning("the validity dates of [tls] certificate could not be read",
                    extra={"fields": {"certificate": str(certificate)}})
        return
    now = time.time() if now is None else now
    if now > not_after:
        raise SettingsError(f"setting [tls] certificate: {certificate}: expired on "
                            f"{decoded['notAfter']} (every TLS handshake would fail)")
    if now < not_before:
        raise SettingsError(f"setting [tls] certificate: {certificate}: not valid before "
                            f"{decoded['notBefore']} (every TLS handshake would fail)")
    days = (not_after - now) / 86400
    if days < EXPIRY_WARNING_DAYS:
        log.warning("the node's TLS certificate expires soon", extra={"fields": {
            "certificate": str(certificate), "not_after": decoded["notAfter"],
            "days_left": round(days, 1)}})


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context the TLS listener wraps its connections with (module docstring).

    Client certificates: required and checked against ``ca_file`` with
    ``require_client_certificate``; otherwise one that is presented is checked when ``ca_file``
    is given, and none is asked for without it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                        | ssl.OP_CIPHER_SERVER_PREFERENCE)
    certificate, key = Path(tls.certificate), Path(tls.key)
    try:  # a context of its own parses the certificate alone, so a failure here is its own
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=certificate)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise SettingsError(f"setting [tls] certificate: {certificate}: not a PEM certificate "
                            f"({_reason(exc)})") from exc
    try:
        context.load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise SettingsError(f"setting [tls] key: {key}: not the PEM private key of "
                            f"[tls] certificate ({_reason(exc)})") from exc
    _check_validity(certificate)
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SettingsError(f"setting [tls] ca_file: {tls.ca_file}: no PEM CA certificates "
                                f"({_reason(exc)})") from exc
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_file:
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context
