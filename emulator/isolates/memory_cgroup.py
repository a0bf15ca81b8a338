"""A memory cgroup per isolate: a bound on every byte an isolate makes the kernel hold for it.

``RLIMIT_AS`` counts address space, so memory written to an anonymous in-memory file, pipe
buffers or kernel objects escape it. A memory cgroup counts the pages themselves. The zygote makes
one parent group (``dynwf-<zygote pid>``) beneath its own; each isolate, still root, makes its own
group in it, sets the limit and moves in before it gives up its privileges. When an isolate ends,
the zygote reads whether the kernel's OOM killer acted in its group (so the host can say
"memory limit" instead of "killed by SIGKILL") and removes the group.

Both hierarchies are handled: cgroup v2 (``memory.max``, ``memory.events``) where the memory
controller can be enabled for the zygote's children, else v1 (``memory.limit_in_bytes``,
``memory.oom_control``). Where neither can be used (not root, no memory controller, a container
that mounts cgroups read-only), :func:`discover` says why and isolates keep ``RLIMIT_AS`` alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_MiB = 1024 * 1024


@dataclass(frozen=True)
class MemoryGroups:
    """Where isolates' groups go, and which cgroup version's files they have."""

    parent: str
    version: int

    def enter(self, pid: int, memory_mb: int) -> str:
        """Make ``pid``'s group, limit it to ``memory_mb`` MiB and move ``pid`` in (as root)."""
        group = os.path.join(self.parent, f"i{pid}")
        os.mkdir(group)
        limit = str(memory_mb * _MiB)
        if self.version == 2:
            _write(group, "memory.max", limit)
            _write(group, "memory.swap.max", "0", missing_ok=True)
        else:
            _write(group, "memory.limit_in_bytes", limit)
            _write(group, "memory.memsw.limit_in_bytes", limit, missing_ok=True)
        _write(group, "cgroup.procs", str(pid))
        return group

    def release(self, pid: int) -> bool:
        """Remove ``pid``'s group once it has ended; True when the OOM killer acted in it."""
        group = os.path.join(self.parent, f"i{pid}")
        if not os.path.isdir(group):
            return False
        killed = _oom_kills(group, self.version) > 0
        try:
            os.rmdir(group)
        except OSError:
            pass
        return killed

    def close(self) -> None:
        _remove_tree(self.parent)


def discover(owner_pid: int) -> "MemoryGroups | str":
    """A parent group for the isolates of the zygote ``owner_pid``, or why there can be none."""
    if os.geteuid() != 0:
        return "needs root to make a group per isolate"
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as lines:
            memberships = [line.rstrip("\n").split(":", 2) for line in lines]
        with open("/proc/self/mountinfo", encoding="utf-8") as lines:
            mounts = [line.split() for line in lines]
    except OSError as exc:
        return f"cannot read the process's cgroups: {exc.strerror}"
    found = _v2(memberships, mounts) or _v1(memberships, mounts)
    if found is None:
        return "no memory controller is available to this process"
    base, version = found
    _remove_stale(base)
    parent = os.path.join(base, f"dynwf-{owner_pid}")
    try:
        os.makedirs(parent, exist_ok=True)
        if version == 2:
            _write(parent, "cgroup.subtree_control", "+memory")
    except OSError as exc:
        return f"cannot make a cgroup beneath {base}: {exc.strerror}"
    return MemoryGroups(parent, version)


def _v2(memberships: list[list[str]], mounts: list[list[str]]) -> tuple[str, int] | None:
    path = next((m[2] for m in memberships if m[0] == "0" and m[1] == ""), None)
    point = next((m[4] for m in mounts if _fstype(m) == "cgroup2"), None)
    if path is None or point is None:
        return None
    base = os.path.join(point, path.lstrip("/"))
    try:  # the zygote's own group holds processes, so memory must already reach its children
        with open(os.path.join(base, "cgroup.subtree_control"), encoding="utf-8") as delegated:
            if "memory" not in delegated.read().split():
                return None
    except OSError:
        return None
    return base, 2


def _fstype(mount: list[str]) -> str:
    dash = mount.index("-")
    return mount[dash + 1] if dash + 1 < len(mount) else ""


def _v1(memberships: list[list[str]], mounts: list[list[str]]) -> tuple[str, int] | None:
    path = next((m[2] for m in memberships if "memory" in m[1].split(",")), None)
    if path is None:
        return None
    for mount in mounts:
        dash = mount.index("-")
        if _fstype(mount) == "cgroup" and "memory" in mount[dash + 3].split(","):
            root = mount[3]  # the part of the hierarchy this mount shows
            relative = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
            base = os.path.normpath(os.path.join(mount[4], relative))
            if os.access(base, os.W_OK):
                return base, 1
    return None


def _write(group: str, name: str, value: str, *, missing_ok: bool = False) -> None:
    try:
        with open(os.path.join(group, name), "w", encoding="ascii") as file:
            file.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _oom_kills(group: str, version: int) -> int:
    name = "memory.events" if version == 2 else "memory.oom_control"
    try:
        with open(os.path.join(group, name), encoding="ascii") as file:
            for line in file:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _remove_tree(parent: str) -> None:
    try:
        children = [entry.path for entry in os.scandir(parent) if entry.is_dir()]
    except OSError:
        return
    for child in children:
        try:
            os.rmdir(child)
        except OSError:
            pass
    try:
        os.rmdir(parent)
    except OSError:
        pass


def _remove_stale(base: str) -> None:
    """Groups left by zygotes that were killed before they could remove them."""
    try:
        entries = [entry.name for entry in os.scandir(base) if entry.name.startswith("dynwf-")]
    except OSError:
        return
    for name in entries:
        owner = name.removeprefix("dynwf-")
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            _remove_tree(os.path.join(base, name))
