"""One workflow written once and run two ways: by the engine in the host (its own step client)
and by a tenant's isolate behind a dispatcher (the step wire, ``emulator/sdk/remote.py``). The
tests in ``test_stored_datetimes.py``, ``test_retries_in_invocation.py`` and
``test_modifiers_restart.py`` run each case both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plugin_projects import WRANGLER, _write, write_lab

#: The host runs the class from the project's own entry module; the tenant's isolate the same
#: class from ``tenants/parity/index.py``.
WHERE = ("host", "isolate")


def write_parity(root: Path, where: str, source: str) -> Path:
    if where == "isolate":
        return write_lab(root, {"parity": source})
    _write(root / "wrangler.jsonc", WRANGLER % {"class_name": "TenantWorkflow"})
    _write(root / "src" / "entry.py", source)
    return root


def binding_of(dynwf: Any, where: str) -> Any:
    """What creates instances: the project's binding, or the tenant's wrapped one."""
    return dynwf.tenant("parity").binding if where == "isolate" else dynwf.binding()


def target_of(dynwf: Any, where: str) -> Any:
    """What ``introspect_instance`` takes for this project."""
    return dynwf.tenant("parity") if where == "isolate" else dynwf.binding()
