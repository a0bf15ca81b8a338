"""Tenant scopes of instance ids: how a wrapped binding keeps tenants' instances apart.

A wrapped binding (``wrap_workflow_binding(metadata)``) gives each distinct dispatcher metadata a
scope: 12 hex digits of the SHA-256 of the metadata's canonical JSON. The engine keys an instance
created through it as ``<scope>-<tenant's id>`` and stores the scope beside it, so a tenant reaches
only ids in its own scope, and two tenants may use the same id. The platform's id rule (1-100
characters) applies to the tenant's id; the scope is never charged against it
(docs/semantics.md, "Tenants and the dispatcher").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from emulator.rules.limits import check_instance_id
from emulator.errors import ValidationError

#: Where the wrapped binding puts the dispatcher metadata in an instance's params.
ENVELOPE_KEY = "__dispatcherMetadata"
PREFIX_LENGTH = 12


def tenant_prefix(metadata: Any) -> str:
    """The scope of ``metadata``: 12 hex digits of the SHA-256 of its canonical JSON."""
    try:
        canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"dispatcher metadata must be JSON-serialisable: {exc}",
                              hint="use strings, numbers, booleans, None, lists and dicts") from None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:PREFIX_LENGTH]


def scoped_instance_id(metadata: Any, tenant_id: str) -> str:
    """The engine's key for ``tenant_id`` (checked by the platform's id rule) in ``metadata``'s
    scope."""
    return f"{tenant_prefix(metadata)}-{check_instance_id(tenant_id)}"


def tenant_instance_id(metadata: Any, real_id: str) -> str | None:
    """The id a tenant with ``metadata`` knows ``real_id`` by, or None if it is not theirs."""
    head = tenant_prefix(metadata) + "-"
    if isinstance(real_id, str) and real_id.startswith(head) and len(real_id) > len(head):
        return real_id[len(head):]
    return None


def scope_of(real_id: str, params: Any) -> tuple[str, str] | None:
    """``(scope, tenant's id)`` when ``real_id`` was made by a wrapped binding for the metadata
    that ``params`` carry, else None (an instance of the dispatcher's own)."""
    if not isinstance(params, Mapping) or ENVELOPE_KEY not in params:
        return None
    try:
        prefix = tenant_prefix(params[ENVELOPE_KEY])
    except ValidationError:
        return None
    if isinstance(real_id, str) and real_id.startswith(prefix + "-"):
        return prefix, real_id[len(prefix) + 1:]
    return None
