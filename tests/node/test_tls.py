"""DICOM TLS end to end (PS3.15 Annex B.9; docs/conformance.md): certificates made by ``openssl``
here, DCMTK ``storescu +tls`` and pynetdicom with an :class:`ssl.SSLContext` as senders.

A valid client certificate gets its objects received and recorded; with
``[tls] require_client_certificate`` no certificate, an expired one and one from an unknown CA
are each refused and logged, as is a plain DICOM connection to the TLS port and a client that
offers only suites BCP 195 excludes. A wrong certificate or key stops start-up naming the
setting.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import SpatialRegistrationStorage, Verification  # type: ignore[attr-defined]

from node.dimse.service import Node
from node.settings import Settings, SettingsError
from tests.node.conftest import (
    STORESCU,
    export,
    make_settings,
    needs_dcmtk,
    sro_files,
    storescu_results,
)
from tests.node.test_hostile_peers import associate_rq

TRANSPORT_LOGGER = "node.dimse.transport"


@dataclass(frozen=True)
class Certificates:
    folder: Path

    def __getattr__(self, name: str) -> Path:
        return self.folder / name.replace("_", ".")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(cwd: Path, name: str, subject: str, ca: str, days: str, ext: str = "") -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", subject, cwd=cwd)
    extra = ["-extfile", ext] if ext else []
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", days, *extra, cwd=cwd)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA; server and client certificates it signs; an expired client certificate; a client
    certificate of another (unknown) CA."""
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=Test {ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _issue(d, "server", "/CN=localhost", "ca", "2", "server.ext")
    _issue(d, "client", "/CN=CONSOLE1", "ca", "2")
    _issue(d, "expired", "/CN=CONSOLE1", "ca", "-1")  # notAfter before now: expired
    _issue(d, "unknown", "/CN=CONSOLE1", "other", "2")
    _issue(d, "long", "/CN=localhost", "ca", "60")  # beyond the 30-day warning
    return Certificates(d)


def tls_settings(tmp_path: Path, certs: Certificates, **tls: object) -> Settings:
    values: dict[str, object] = {"enabled": True, "port": 0, "certificate": str(certs.server_pem),
                                 "key": str(certs.server_key), "ca_file": str(certs.ca_pem),
                                 "require_client_certificate": True}
    values.update(tls)
    return make_settings(tmp_path / "data", tls=values)


def client_context(certs: Certificates, client: str | None = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs.ca_pem))
    if client is not None:
        ctx.load_cert_chain(str(certs.folder / f"{client}.pem"),
                            str(certs.folder / f"{client}.key"))
    return ctx


def store_over_tls(port: int, ctx: ssl.SSLContext, paths: list[Path]) -> list[int] | None:
    """C-STORE each file over TLS; the statuses, or ``None`` when no association was made."""
    from pydicom import dcmread

    ae = AE(ae_title="CONSOLE1")
    ae.add_requested_context(SpatialRegistrationStorage)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="SRO_DECODER",
                         tls_args=(ctx, "localhost"))
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def refused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.getMessage()} {getattr(r, 'fields', {})}" for r in caplog.records
            if r.name == TRANSPORT_LOGGER and "TLS handshake failed" in r.getMessage()]


def wait_for(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_pynetdicom_over_tls_stores_and_records(
    tmp_path: Path, certs: Certificates, sro_dir: Path, node_factory: Callable[[Settings], Node]
) -> None:
    settings = tls_settings(tmp_path, certs, port=0)
    node = node_factory(settings)
    assert node.tls_address == node.address  # port 0: TLS on the main port
    files = sro_files(sro_dir)[:5]
    statuses = store_over_tls(node.address[1], client_context(certs), files)
    assert statuses is not None and len(statuses) == 5
    assert len(export(settings.data_dir)) == 5


@pytest.mark.parametrize("client", [None, "expired", "unknown"])
def test_clients_without_a_valid_certificate_are_refused_and_logged(
    tmp_path: Path, certs: Certificates, sro_dir: Path, client: str | None,
    node_factory: Callable[[Settings], Node], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOGGER)
    settings = tls_settings(tmp_path, certs)
    node = node_factory(settings)
    assert store_over_tls(node.address[1], client_context(certs, client),
                          sro_files(sro_dir)[:1]) is None
    wait_for(lambda: refused_lines(caplog))
    lines = refused_lines(caplog)
    assert len(lines) == 1 and "127.0.0.1:" in lines[0]
    if client == "expired":
        assert "expired" in lines[0]
    assert export(settings.data_dir) == {}


def test_a_plain_connection_to_the_tls_port_is_refused(
    tmp_path: Path, certs: Certificates, node_factory: Callable[[Settings], Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOGGER)
    node = node_factory(tls_settings(tmp_path, certs, port=0))
    with socket.create_connection(node.address, timeout=5) as sock:
        sock.sendall(associate_rq())  # a plain A-ASSOCIATE-RQ where a ClientHello belongs
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert not answer or answer[0] != 0x02  # never an A-ASSOCIATE-AC
    wait_for(lambda: refused_lines(caplog))
    assert len(refused_lines(caplog)) == 1


def test_a_client_offering_only_suites_without_forward_secrecy_is_refused(
    tmp_path: Path, certs: Certificates, node_factory: Callable[[Settings], Node],
) -> None:
    node = node_factory(tls_settings(tmp_path, certs))
    ctx = client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-GCM-SHA256")  # RSA key exchange: not BCP 195
    with pytest.raises(ssl.SSLError), socket.create_connection(node.address, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost"):
        pass
    ok = client_context(certs)
    ok.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(node.address, timeout=5) as raw, \
            ok.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.2" and "GCM" in str(tls.cipher()[0])
        assert tls.cipher()[0].startswith(("ECDHE", "DHE"))


def test_tls_beside_plain_tcp_and_a_silent_tls_peer_blocks_nobody(
    tmp_path: Path, certs: Certificates, sro_dir: Path, node_factory: Callable[[Settings], Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Own TLS port: the plain port still answers; a peer that connects to the TLS port and
    sends nothing (no ClientHello) is closed at the first-PDU deadline and meanwhile holds
    neither the accept loop nor a slot."""
    caplog.set_level(logging.WARNING, logger=TRANSPORT_LOGGER)
    settings = make_settings(tmp_path / "data", node={"first_pdu_timeout_s": 1.0}, tls={
        "enabled": True, "port": 0, "certificate": str(certs.server_pem),
        "key": str(certs.server_key)})
    # [tls] port 0 is "TLS on the main port": an own port is a real one
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tls_port = s.getsockname()[1]
    settings = settings.model_copy(update={"tls": settings.tls.model_copy(
        update={"port": tls_port})})
    node = node_factory(settings)
    assert node.tls_address == ("127.0.0.1", tls_port) != node.address
    silent = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    try:
        started = time.monotonic()
        anonymous = ssl.create_default_context(cafile=str(certs.ca_pem))
        assert store_over_tls(tls_port, anonymous, sro_files(sro_dir)[:2]) is not None
        assert time.monotonic() - started < 1.0  # not behind the silent peer's handshake
        plain = AE(ae_title="CONSOLE1")
        plain.add_requested_context(Verification)
        assoc = plain.associate("127.0.0.1", node.address[1], ae_title="SRO_DECODER")
        assert assoc.is_established
        assoc.release()
        silent.settimeout(3.0)
        assert silent.recv(1) == b""  # closed by the node at the deadline
    finally:
        silent.close()
    assert any("no whole first PDU" in r.getMessage() for r in caplog.records)


@needs_dcmtk
def test_dcmtk_storescu_over_tls(
    tmp_path: Path, certs: Certificates, sro_dir: Path, node_factory: Callable[[Settings], Node],
) -> None:
    settings = tls_settings(tmp_path, certs)
    node = node_factory(settings)
    files = sro_files(sro_dir)[:4]
    assert STORESCU is not None
    tls = ["+tls", str(certs.client_key), str(certs.client_pem), "+cf", str(certs.ca_pem)]
    run = subprocess.run([STORESCU, "-v", "-aet", "CONSOLE1", "-aec", "SRO_DECODER", *tls,
                          "127.0.0.1", str(node.address[1]), *map(str, files)],
                         capture_output=True, text=True, timeout=60)
    assert len(storescu_results(run.stdout + run.stderr)) == 4, run.stdout + run.stderr
    assert len(export(settings.data_dir)) == 4
    unknown = ["+tls", str(certs.unknown_key), str(certs.unknown_pem), "+cf", str(certs.ca_pem)]
    refused = subprocess.run([STORESCU, "-aet", "CONSOLE1", "-aec", "SRO_DECODER", *unknown,
                              "127.0.0.1", str(node.address[1]), str(files[0])],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[tls\] certificate"):
        make_settings(tmp_path, tls={"enabled": True, "certificate": str(tmp_path / "no.pem"),
                                     "key": str(tmp_path / "no.key")})
    with pytest.raises(SettingsError, match=r"\[tls\] key: must be given"):
        make_settings(tmp_path, tls={"enabled": True, "certificate": __file__})


@pytest.mark.parametrize(("certificate", "key", "named"), [
    ("server.key", "server.key", r"\[tls\] certificate: .*not a PEM certificate"),
    ("server.pem", "client.key", r"\[tls\] key: .*not the PEM private key"),
    ("server.pem", "server.ext", r"\[tls\] key"),
    ("expired.pem", "expired.key", r"\[tls\] certificate: .*expired on .*GMT"),
])
def test_a_wrong_certificate_or_key_stops_start_up_naming_it(
    tmp_path: Path, certs: Certificates, certificate: str, key: str, named: str,
) -> None:
    settings = tls_settings(tmp_path, certs, certificate=str(certs.folder / certificate),
                            key=str(certs.folder / key))
    node = Node(settings)
    with pytest.raises(SettingsError, match=named):
        node.start()
    node.stop(0)


def test_serve_reports_a_wrong_certificate_and_exits(tmp_path: Path,
                                                     certs: Certificates) -> None:
    run = subprocess.run(
        ["sro-decoder", "serve", "--data-dir", str(tmp_path), "--port", "0", "--model",
         "analytic"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "SRO_DECODER_TLS__ENABLED": "yes",
             "SRO_DECODER_TLS__CERTIFICATE": str(certs.client_key),
             "SRO_DECODER_TLS__KEY": str(certs.client_key)})
    assert run.returncode == 2  # a wrong setting: the service unit does not restart it
    assert "setting [tls] certificate" in run.stderr


def test_a_node_certificate_near_its_end_is_said_at_start_up(
        certs: Certificates, caplog: pytest.LogCaptureFixture) -> None:
    """Valid for two days: under the 30-day warning; the dates are the certificate's own."""
    from node.dimse.tls import _check_validity

    with caplog.at_level(logging.WARNING, logger="node.dimse.tls"):
        _check_validity(certs.server_pem)
    (record,) = [r for r in caplog.records if r.name == "node.dimse.tls"]
    fields = record.fields  # type: ignore[attr-defined]
    assert record.getMessage() == "the node's TLS certificate expires soon"
    assert 1.0 < fields["days_left"] <= 2.0 and fields["not_after"].endswith("GMT")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="node.dimse.tls"):
        _check_validity(certs.folder / "long.pem")
    assert not [r for r in caplog.records if r.name == "node.dimse.tls"]
    with pytest.raises(SettingsError, match=r"\[tls\] certificate: .*not valid before .*GMT"):
        _check_validity(certs.folder / "long.pem", now=time.time() - 2 * 86400)
