"""The isolate's resource limits (``setrlimit``): address space, open files, no core dumps. The
memory cgroup of :mod:`emulator.isolates.memory_cgroup` bounds resident memory in the kernel."""

from __future__ import annotations

import resource

_MiB = 1024 * 1024


def _virtual_size() -> int:
    try:  # bytes, not text: a text open looks up a codec, which costs more than the read
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _lower(limit: int, value: int) -> int:
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))
    return value


def apply_limits(memory_mb: int | None, max_open_files: int | None = 256) -> dict[str, int | None]:
    """Resource limits of the isolate; returns the values set, in bytes and descriptors.

    Memory is ``RLIMIT_AS`` set to the current virtual size plus ``memory_mb`` MiB, so an isolate
    forked from a large zygote still gets ``memory_mb`` of headroom; past it, allocations raise
    ``MemoryError``. It counts address space, not resident memory: every thread reserves its stack
    (8 MiB) and glibc may reserve a 64 MiB malloc arena per thread from the same budget.
    ``RLIMIT_CORE`` is 0. ``RLIMIT_NPROC`` is not set: the kernel does not enforce it for root,
    and for other users it counts every process of the user, other isolates included.
    """
    applied: dict[str, int | None] = {"address_space": None, "open_files": None}
    _lower(resource.RLIMIT_CORE, 0)
    if memory_mb is not None:
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, got {memory_mb}")
        applied["address_space"] = _lower(resource.RLIMIT_AS, _virtual_size() + memory_mb * _MiB)
    if max_open_files is not None:
        applied["open_files"] = _lower(resource.RLIMIT_NOFILE, max_open_files)
    return applied
