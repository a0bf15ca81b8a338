"""The platform's restrictions as Python sees them, applied in an isolate before tenant code runs.

On Cloudflare a Dynamic Worker runs in a V8 isolate and the JavaScript engine is the sandbox.
Python in a process is no such sandbox: code can reach any object of its own interpreter by
reference (frames, ``gc``, the guard's own closures and code objects), so nothing written in
Python can stop a determined tenant from undoing a Python-level check. The boundary is the kernel
(:mod:`emulator.isolates.sandbox`: a memory cgroup, a user of the isolate's own, Landlock,
seccomp, an empty network namespace) plus the host, which checks everything an isolate sends.

What this module adds is the friendly first line, so that tenant code written for the platform
fails here the way it fails there, with the platform's messages: resource limits (address space,
open files, no core dumps), an import policy (the tenant's own modules served from memory, the
standard library, ``workers`` and ``dynamic_workflows``; never the emulator, the CLI, third-party
packages, ``ctypes`` or another tenant's names) and audit hooks (``sys.addaudithook``) refusing
sockets, file writes anywhere, file reads outside the standard library, child processes, signals
to other processes and changed resource limits. Each of these is also refused by a kernel layer;
the tests prove that with the hooks undone.

One module per mechanism: ``tenant_modules`` (the tenant's modules, served from memory),
``import_policy``, ``audit_hooks`` (files, network, processes), ``resource_limits``, and
``folders`` (the folders they reason about). This module puts them in place, in order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Mapping

from emulator.isolates import sandbox
from emulator.isolates.guard import folders, import_policy
from emulator.isolates.guard.audit_hooks import (NO_GLOBAL_OUTBOUND_MESSAGE, SOCKETS_REFUSED_MESSAGE,
                                                  block_network, restrict_files, restrict_processes)
from emulator.isolates.guard.folders import default_read_roots, shared_library_paths
from emulator.isolates.guard.import_policy import (ImportPolicy, admit_tenant_modules,
                                                    apply_base_import_policy)
from emulator.isolates.guard.resource_limits import apply_limits
from emulator.isolates.guard.tenant_modules import TenantModuleFinder

__all__ = [
    "BaseGuard", "GuardProfile", "GuardReport", "NO_GLOBAL_OUTBOUND_MESSAGE",
    "SOCKETS_REFUSED_MESSAGE", "TenantModuleFinder", "admit_tenant", "default_read_roots",
    "install_base_guard", "install_guard", "landlock_abi", "prepare", "shared_library_paths",
]

# The name this function had before the guard became a package; tests reach for it.
_shared_library_paths = shared_library_paths


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or the extension is missing)."""
    return sandbox._sandbox.landlock_abi() if sandbox._sandbox is not None else 0


@dataclass(frozen=True)
class GuardReport:
    """What :func:`install_guard` put in place, for logs and diagnostics."""

    address_space_limit: int | None
    open_files_limit: int | None
    network_allowed: bool
    hidden_modules: int
    kernel: sandbox.Applied


@dataclass(frozen=True)
class GuardProfile:
    """The settings of the tenant-independent part of the guard. The zygote's spare children
    install that part ahead of need for one profile (:func:`install_base_guard`), so a load
    whose code asks for the same profile only admits the tenant's modules. The kernel layers'
    switches are the zygote's: it prepares them once, for every isolate it forks."""

    memory_mb: int | None
    allow_network: bool
    landlock: bool = True
    seccomp: bool = True
    user: bool = True
    network_namespace: bool = True
    memory_cgroup: bool = True
    max_open_files: int | None = 256

    @property
    def layers(self) -> sandbox.Layers:
        return sandbox.Layers(self.landlock, self.seccomp, self.user, self.network_namespace,
                              self.memory_cgroup)


@dataclass(frozen=True)
class BaseGuard:
    """What :func:`install_base_guard` put in place, waiting for its tenant."""

    profile: GuardProfile
    policy: ImportPolicy
    limits: dict[str, int | None]
    kernel: sandbox.Applied


_installed = False


def install_guard(*, modules: Mapping[str, str], tenant_label: str, allow_network: bool,
                  memory_mb: int | None, max_open_files: int | None = 256,
                  **layers: bool) -> GuardReport:
    """Apply every restriction, once per isolate, before the tenant's main module is imported."""
    base = install_base_guard(GuardProfile(memory_mb, allow_network, **layers,
                                           max_open_files=max_open_files))
    return admit_tenant(base, modules, tenant_label)


def install_base_guard(profile: GuardProfile) -> BaseGuard:
    """Every restriction that does not depend on the tenant's modules, once per process.

    Order matters: the kernel layers are prepared first (in the zygote already, for every isolate
    it forks: import paths an unprivileged user can reach, the Landlock ruleset); then the limits,
    so the guard's own work runs under them; then the import policy (which still imports the
    runtime); then the kernel layers are entered (cgroup and user switch need root, which they
    give up); the audit hooks come last.
    """
    global _installed
    if _installed:
        raise RuntimeError("the isolate guard is already installed in this process")
    _installed = True
    roots = default_read_roots()
    sandbox.prepare(profile.layers, roots, shared_library_paths())
    limits = apply_limits(profile.memory_mb, profile.max_open_files)
    policy = apply_base_import_policy()
    kernel = sandbox.enter(profile.memory_mb)
    sys.dont_write_bytecode = True
    restrict_files(roots)
    block_network(profile.allow_network)
    restrict_processes()
    return BaseGuard(profile, policy, limits, kernel)


def admit_tenant(base: BaseGuard, modules: Mapping[str, str], tenant_label: str) -> GuardReport:
    """The tenant-dependent rest of the guard: its modules, served from memory."""
    admit_tenant_modules(base.policy, modules, tenant_label)
    return GuardReport(base.limits["address_space"], base.limits["open_files"],
                       base.profile.allow_network, base.policy.hidden_module_count, base.kernel)


# Filled now, not in each isolate: the zygote imports this package before it forks (after every
# module above, so the shared libraries they map are among the folders found).
folders.fill_caches()


def prepare(profile: GuardProfile | None = None) -> None:
    """Work the zygote does once, before forking, so each isolate does not."""
    layers = profile.layers if profile is not None else sandbox.Layers()
    sandbox.prepare(layers, default_read_roots(), shared_library_paths())
    import_policy.prepare()
