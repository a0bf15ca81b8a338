"""``env.LOADER``: the Worker Loader binding, as a Python dispatcher uses it.

``LOADER.get(id, callback)`` returns a stub at once; the callback (sync or async) is called only
when no live isolate holds ``id``, and returns the code dict. The dict takes the Python spellings
(``compatibility_date``, ``main_module``, ``modules``, ``env``, ``global_outbound``, ``limits``)
and the JS ones (``compatibilityDate``, ``mainModule``, ``globalOutbound``), so code ported from
the blog works; an unknown key is an error naming it. A callback that raises makes every call on
the stub raise that error (docs/semantics.md §6.1).

``global_outbound`` decides what the isolate's ``fetch`` does (left out: the host's network;
``None``: refused with the platform's message; a stub with ``fetch(request)``: the stub answers
every request); see ``isolates/outbound.py``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from emulator.code_version import code_fingerprint
from emulator.error_codes import Code
from emulator.errors import DynwfError
from emulator.isolates.outbound import OutboundPolicy
from emulator.isolates.pool import IsolatePool

_SPELLINGS = {
    "compatibility_date": "compatibility_date", "compatibilityDate": "compatibility_date",
    "compatibility_flags": "compatibility_flags", "compatibilityFlags": "compatibility_flags",
    "main_module": "main_module", "mainModule": "main_module",
    "modules": "modules", "env": "env", "limits": "limits",
    "global_outbound": "global_outbound", "globalOutbound": "global_outbound",
    "allow_experimental": "allow_experimental", "allowExperimental": "allow_experimental",
    "tails": "tails", "streaming_tails": "tails", "streamingTails": "tails",
}
MAX_CODE_BYTES = 64 * 1024 * 1024


class LoaderError(DynwfError):
    code = Code.LOADER_INVALID_CODE


def normalise_code(raw: Any, worker_id: str) -> dict[str, Any]:
    """Validate a loader callback's result into the dict an isolate's ``load`` takes."""
    if not isinstance(raw, dict):
        raise LoaderError(f"the code callback for '{worker_id}' returned {type(raw).__name__}, "
                          "not a dict with main_module and modules")
    code: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _SPELLINGS:
            raise LoaderError(f"unknown key '{key}' in the code for '{worker_id}'",
                              hint="allowed: " + ", ".join(sorted(set(_SPELLINGS.values()))))
        code[_SPELLINGS[key]] = value
    modules = code.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise LoaderError(f"the code for '{worker_id}' needs 'modules': a dict of file name to source")
    total = 0
    for name, source in modules.items():
        if not isinstance(name, str) or not name.endswith(".py"):
            raise LoaderError(f"Module name must end with '.py'. Got: {name!r}")
        if not isinstance(source, str):
            raise LoaderError(f"module {name!r} of '{worker_id}' must be source text, "
                              f"not {type(source).__name__}")
        total += len(source.encode())
    if total > MAX_CODE_BYTES:
        raise LoaderError(f"the code for '{worker_id}' is {total:,} bytes, over the "
                          f"{MAX_CODE_BYTES // 2**20} MiB limit")
    main = code.get("main_module")
    if main not in modules:
        raise LoaderError(f"main_module {main!r} of '{worker_id}' is not one of its modules "
                          f"({', '.join(sorted(modules))})")
    limits = code.pop("limits", None) or {}
    try:
        outbound = OutboundPolicy.from_code(code, worker_id)
    except ValueError as exc:
        raise LoaderError(str(exc)) from None
    out = {"modules": modules, "main_module": main, "fingerprint": code_fingerprint(modules),
           "compatibility_date": code.get("compatibility_date"),
           "env": code.get("env") or {},
           # omitted -> inherits the parent's network, as on the platform; None -> no network
           "allow_network": "global_outbound" not in code or code["global_outbound"] is not None,
           # what fetch does; kept by the pool on the host's side, never sent to the isolate
           "outbound": outbound}
    if "cpu_ms" in limits or "cpuMs" in limits:
        out["cpu_ms"] = int(limits.get("cpu_ms", limits.get("cpuMs")))
    if "memory_mb" in limits or "memoryMb" in limits:
        out["memory_mb"] = int(limits.get("memory_mb", limits.get("memoryMb")))
    return out


class EntrypointStub:
    """``stub.get_entrypoint(name)``: every public attribute is an async method run in the isolate."""

    def __init__(self, worker: "WorkerStub", name: str | None, props: dict[str, Any] | None) -> None:
        self._worker = worker
        self._name = None if name in (None, "default", "Default") else name
        self._props = props

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            isolate = await self._worker._isolate()
            return await isolate.invoke(self._name, method, list(args), kwargs, self._props)
        call.__name__ = method
        return call


class WorkerStub:
    def __init__(self, loader: "WorkerLoader", worker_id: str, callback: Callable[[], Any]) -> None:
        self._loader = loader
        self.id = worker_id
        self._callback = callback

    def get_entrypoint(self, name: str | None = None, props: dict[str, Any] | None = None,
                       **_options: Any) -> EntrypointStub:
        return EntrypointStub(self, name, props)

    getEntrypoint = get_entrypoint

    async def _isolate(self):
        async def code() -> dict[str, Any]:
            raw = self._callback()
            if inspect.isawaitable(raw):
                raw = await raw
            return normalise_code(raw, self.id)
        return await self._loader.pool.acquire(self._loader.key(self.id), code)


class WorkerLoader:
    """The ``worker_loaders`` binding. ``namespace`` keeps two loaders' ids apart."""

    def __init__(self, pool: IsolatePool, namespace: str = "LOADER") -> None:
        self.pool = pool
        self.namespace = namespace

    def key(self, worker_id: str) -> str:
        return f"{self.namespace}:{worker_id}"

    def get(self, worker_id: str, callback: Callable[[], Any]) -> WorkerStub:
        if not isinstance(worker_id, str) or not worker_id:
            raise LoaderError("LOADER.get needs a non-empty string id")
        return WorkerStub(self, worker_id, callback)

    def evict(self, worker_id: str) -> None:
        self.pool.evict(self.key(worker_id))

    def mark_stale(self, worker_id: str) -> None:
        self.pool.mark_stale(self.key(worker_id))
