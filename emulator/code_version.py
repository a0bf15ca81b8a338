"""The fingerprint of a tenant's module set: what an instance records as the code it started on."""

from __future__ import annotations

import hashlib


def code_fingerprint(modules: dict[str, str]) -> str:
    """A short, stable name for a module set: the same files give the same fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + modules[name].encode() + b"\0")
    return digest.hexdigest()[:12]
