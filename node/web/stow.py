"""DICOMweb STOW-RS (PS3.18 section 10.5): instances pushed over HTTP take the C-STORE path.

The request is ``multipart/related; type="application/dicom"`` (RFC 2387), each part a PS3.10
file. Every part goes through :meth:`node.ingest.receipt.StoreHandler.receive_part10`: archived,
decoded, recorded, then answered, with ``[node] max_dataset_bytes`` for each instance as over
C-STORE; a part that is no DICOM file is archived as received and recorded ``invalid``. The
response is the Store Instances Response Module (PS3.18 Table 10.5.3-3) in the DICOM JSON model
(PS3.18 Annex F): Referenced SOP Sequence (0008,1199) for the instances stored, Failed SOP
Sequence (0008,1198) with Failure Reason (0008,1197) = the PS3.4 status for the others; HTTP
200 when all were stored, 202 when some, 409 when none (PS3.18 Table 10.5.3-1).
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.responses import Response

from node.audit.models import utcnow
from node.ingest.receipt import Stored, StoreHandler
from node.records import Origin, Source
from node.settings import Settings
from node.web.auth import Principal

DICOM_JSON = "application/dicom+json"
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")  # RFC 2046 section 5.1.1


class StowError(ValueError):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    msg = Message()
    msg["content-type"] = value
    params = {k.lower(): str(v) for k, v in (msg.get_params() or [])[1:]}
    return msg.get_content_type().lower(), params


def split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body (RFC 2046 section 5.1): their headers and content."""
    delimiter = b"--" + boundary.encode("ascii")
    pieces = body.split(b"\r\n" + delimiter)
    first = pieces[0]
    if first.startswith(delimiter):
        pieces[0] = first[len(delimiter):]
    else:  # a preamble before the first delimiter
        if delimiter not in first:
            raise StowError(400, "the body holds no part with the declared boundary")
        pieces[0] = first.split(delimiter, 1)[1]
    parts = []
    for piece in pieces:
        if piece.startswith(b"--"):
            break  # the close delimiter
        line_end = piece.find(b"\r\n")
        if line_end < 0:
            raise StowError(400, "a part has no header section")
        piece = piece[line_end + 2:]
        head, sep, content = piece.partition(b"\r\n\r\n")
        if not sep:
            if piece.startswith(b"\r\n"):
                head, content = b"", piece[2:]
            else:
                raise StowError(400, "a part's header section does not end")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            if b":" in line:
                k, _, v = line.partition(b":")
                headers[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
        parts.append((headers, content))
    else:
        raise StowError(400, "the multipart body has no close delimiter")
    return parts


def _item(stored: Stored, reason: bool) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if stored.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [stored.sop_class_uid]}
    if stored.sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [stored.sop_instance_uid]}
    if reason:
        item["00081197"] = {"vr": "US", "Value": [stored.status]}
        if stored.comment:
            item["00000902"] = {"vr": "LO", "Value": [str(stored.comment)]}
    return item


def response_for(results: list[Stored]) -> Response:
    stored = [r for r in results if r.status == 0]
    failed = [r for r in results if r.status != 0]
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_item(r, False) for r in stored]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_item(r, True) for r in failed]}
    status = 200 if not failed else 202 if stored else 409
    return JSONResponse(body, status, media_type=DICOM_JSON)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise StowError(413, f"the request is larger than [web] stow_max_request_bytes ({limit})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise StowError(413, f"the request is larger than [web] stow_max_request_bytes "
                                 f"({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


async def store_instances(request: Request, store: StoreHandler, settings: Settings,
                          who: Principal, *, association_id: str) -> Response:
    """The STOW-RS request (module docstring)."""
    try:
        media, params = _content_type(request.headers.get("content-type", ""))
        if media != "multipart/related":
            raise StowError(415, "the request must be multipart/related (PS3.18 section 10.5.1)")
        kind = params.get("type", "application/dicom").lower()
        if kind != "application/dicom":
            raise StowError(415, f"parts of type {kind!r}: only application/dicom is accepted")
        boundary = params.get("boundary", "")
        if not _BOUNDARY.match(boundary):
            raise StowError(400, "the multipart boundary is missing or not valid (RFC 2046)")
        parts = split_multipart(await _body(request, settings.web.stow_max_request_bytes),
                                boundary)
        if not parts:
            raise StowError(400, "the request holds no instance")
    except StowError as exc:
        return JSONResponse({"detail": str(exc)}, exc.status)
    client = request.client
    origin = Origin(calling_ae_title=None, called_ae_title=settings.node.ae_title,
                    peer_address=None if client is None else f"{client.host}:{client.port}",
                    association_id=association_id, received_at=utcnow(), source=Source.STOW_RS)
    results = []
    for _headers, content in parts:
        results.append(await run_in_threadpool(store.receive_part10, content, origin))
    return response_for(results)
