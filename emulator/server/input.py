"""What the admin API takes in, read strictly and refused before anything is written.

A body is one JSON object of the route's fields only, at most :data:`MAX_BODY` bytes and
:data:`MAX_DEPTH` levels deep, plain JSON (UTF-8, no NaN or Infinity, no key given twice, no lone
surrogate); ``tenant`` is an id naming a folder of ``tenants/`` (when the project has one), never
a path; ``?limit=`` and ``?after=`` are whole numbers. Every refusal is an :class:`AdminError`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request

from emulator.errors import DynwfError
from emulator.rules.limits import is_valid_id
from emulator.server.errors import AdminError, InvalidTenantError, TooLargeError, UnknownTenantError

MAX_BODY = 2 * 1024 * 1024
#: How much of a body over :data:`MAX_BODY` is read (and dropped) before it is refused.
MAX_DRAIN = 32 * 1024 * 1024
#: How deep a request body's JSON may nest (a body is an object, so its values get one less).
MAX_DEPTH = 100
#: The largest whole number a query parameter may hold (SQLite's INTEGER).
MAX_QUERY_NUMBER = 2**63 - 1
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")


def shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


async def read_body(request: Request) -> bytes:
    """The request's body; over :data:`MAX_BODY`, refused (``admin.too_large``) without being
    held. A body up to :data:`MAX_DRAIN` is read to its end first (and dropped), since a client
    that is still sending may never read an answer given before it is done; a bigger one, by
    its ``Content-Length`` or as it arrives, is refused at once. A client that hangs up before
    the end of its body gets an ``admin.invalid`` error (which it will not read), not a
    traceback in the server's log."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_DRAIN:
        raise _too_large(f"request body of {int(declared):,} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= MAX_BODY:
                chunks.append(chunk)
            elif size > MAX_DRAIN:
                break
    except ClientDisconnect:
        raise AdminError(f"the client hung up after {size:,} bytes of the body") from None
    if size > MAX_BODY:
        raise _too_large("request body" if size > MAX_DRAIN else f"request body of {size:,} bytes")
    return b"".join(chunks)


def _too_large(what: str) -> DynwfError:
    return TooLargeError(what=what, limit=MAX_BODY)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of ``pairs``; a key given twice is refused (which one wins is anyone's guess)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {shown(key, 40)} is given twice in one object")
        seen.add(key)
    return dict(pairs)


def parse_object(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """``raw`` as a JSON object whose keys are among ``fields`` (``{}`` for an empty body); its
    values plain JSON: UTF-8, no NaN or Infinity, no key given twice, nested at most
    :data:`MAX_DEPTH` deep, text that is valid Unicode."""
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:   # not UTF-8, JSONDecodeError, a key twice, a number too long
        raise AdminError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AdminError("the body must be a JSON object",
                         hint="send {" + ", ".join(f'"{name}": ...' for name in fields) + "}")
    check_plain(data)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise AdminError(f"unknown field{'s' * (len(unknown) > 1)} in the body: "
                         + ", ".join(shown(name, 40) for name in unknown),
                         hint="the fields are " + ", ".join(fields))
    return data


def check_plain(value: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_DEPTH`, or text with a lone surrogate (which
    ``json`` reads from ``"\\ud800"`` but no UTF-8 store or response can hold)."""
    pending = [(value, 1)]                  # (a value, its depth: the body itself is 1)
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            raise _too_deep()
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                pending.append((inner, depth + 1))
        elif isinstance(item, list):
            pending.extend((inner, depth + 1) for inner in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AdminError(f"the body's text holds {shown(text[exc.start:exc.end])}, a lone "
                         "surrogate, which is not Unicode") from None


def _too_deep() -> DynwfError:
    return AdminError(f"the body nests deeper than {MAX_DEPTH} levels")


def query_number(request: Request, name: str, *, least: int) -> int | None:
    """The query parameter ``name`` as a whole number from ``least`` up (None when absent)."""
    text = request.query_params.get(name)
    if not text:
        return None
    number = int(text) if _WHOLE_NUMBER.fullmatch(text) else None
    if number is None or not least <= number <= MAX_QUERY_NUMBER:
        raise AdminError(f"{name} must be a whole number from {least} to {MAX_QUERY_NUMBER}, "
                         f"not {shown(text, 40)}")
    return number


def project_tenants(tenants_dir: Path) -> list[str]:
    """The tenants the project keeps in ``tenants/``: each folder whose name is an id."""
    if not tenants_dir.is_dir():
        return []
    return sorted(path.name for path in tenants_dir.iterdir()
                  if path.is_dir() and is_valid_id(path.name))


def check_tenant(tenants_dir: Path, tenant: Any) -> str:
    """``tenant`` when it names one of the project's tenants: an id (so never a path), and a
    folder of ``tenants/`` when the project keeps its tenants there."""
    if not is_valid_id(tenant):
        raise InvalidTenantError(shown=shown(tenant))
    if tenants_dir.is_dir() and not (tenants_dir / tenant).is_dir():
        raise UnknownTenantError(tenant=tenant, known=project_tenants(tenants_dir))
    return tenant


def create_metadata(tenants_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The dispatcher metadata a create body names: ``{"tenantId": tenant}``, or its
    ``metadata`` object (whose ``tenantId``, when it has one, must be a tenant too)."""
    tenant, metadata = data.get("tenant"), data.get("metadata")
    if metadata is None:
        if tenant is None:
            raise AdminError("give 'tenant' (or 'metadata', an object)")
        return {"tenantId": check_tenant(tenants_dir, tenant)}
    if not isinstance(metadata, dict) or not metadata:
        raise AdminError("'metadata' must be a non-empty object")
    if "tenantId" in metadata:
        check_tenant(tenants_dir, metadata["tenantId"])
    if tenant is not None and metadata.get("tenantId") != tenant:
        raise AdminError("'tenant' and the tenantId of 'metadata' differ",
                         hint="give one of them")
    return metadata


async def read_object(request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
    """The request's body as a JSON object of ``fields`` (:func:`read_body`, :func:`parse_object`)."""
    return parse_object(await read_body(request), fields)
