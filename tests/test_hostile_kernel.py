"""A hostile tenant that first switches off every Python check of its isolate, then attacks: each
attack must be refused by a kernel layer or the host, and nothing changes for anyone else
(docs/reliability.md, "Hostile tenant code with the Python checks off"; README, "Isolates and
tenant isolation"). Run as root, as CI runs, so the privilege drop is exercised."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
import socket
import sys
import textwrap
import time

import pytest

from emulator.isolates import sandbox
from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.isolates.sandbox import Layers
from emulator.loader import WorkerLoader
from tests.hostile import ATTACKS, DISARM

pytestmark = pytest.mark.skipif(sandbox._sandbox is None or not sys.platform.startswith("linux"),
                                reason="the kernel layers need Linux and the _sandbox extension")
IS_ROOT = os.geteuid() == 0

TENANT = textwrap.dedent('''
    import os, socket, sys, time
    from workers import WorkerEntrypoint
    from disarm import attempt, disarm
    from attacks import run_attacks


    class Default(WorkerEntrypoint):
        async def undo_checks(self):
            undone = disarm()
            import emulator  # refused by the import policy before
            return {**undone, "emulator": emulator.__name__}

        async def attack(self, target):
            disarm()
            return run_attacks(target)

        async def attack_from_the_watchdog_thread(self, target):
            """Get our own code run in the isolate's helper thread, as the first hole did."""
            disarm()
            results, original = {}, time.sleep

            def hijacked(seconds):
                if not results:
                    results.update(run_attacks(target, in_thread=True))
                original(seconds)
            time.sleep = hijacked
            deadline = time.monotonic() + 10
            while not results and time.monotonic() < deadline:
                original(0.01)
            time.sleep = original
            return results

        async def write_to_descriptors(self, marker):
            disarm()
            os.write(1, f"{marker} on fd 1\\n".encode())
            os.write(2, f"{marker} on fd 2\\n".encode())
            sys.__stderr__.write(f"{marker} on sys.__stderr__\\n")
            sys.__stderr__.flush()
            return "written"

        async def fill_pipes(self, count):
            """Memory the address-space limit never sees: kernel pipe buffers."""
            import fcntl
            disarm()
            held = []
            for _ in range(count):
                read, write = os.pipe()
                fcntl.fcntl(write, 1031, 1 << 20)      # F_SETPIPE_SZ: 1 MiB
                os.set_blocking(write, False)
                try:
                    while True:
                        os.write(write, b"x" * 65536)
                except BlockingIOError:
                    pass
                held.append((read, write))
            return len(held)

        async def environment(self):
            disarm()
            return dict(os.environ)

        async def kill_the_group_through_sigio(self):
            """Ask the kernel to SIGKILL this isolate's process group (the zygote and every
            isolate) when a pipe becomes readable, then make it readable."""
            import fcntl
            disarm()
            read, write = os.pipe()
            armed = [attempt(lambda: fcntl.fcntl(read, fcntl.F_SETOWN, -os.getpgrp())),
                     attempt(lambda: fcntl.fcntl(read, 10, 9)),              # F_SETSIG SIGKILL
                     attempt(lambda: fcntl.fcntl(read, fcntl.F_SETFL, os.O_ASYNC))]
            os.write(write, b"x")
            return armed

        async def fork_path(self):
            """How this isolate was made: a spare prepared its guard before it had a tenant."""
            disarm()
            from emulator.isolates import child
            return "spare" if child._Prepared.base is not None else "on demand"

        async def read_stdin(self):
            disarm()
            return os.read(0, 100).decode()


''')


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


OMITTED = object()   # a code dict's key left out


def code(**extra):
    def build():
        built = {"compatibility_date": "2026-04-01", "main_module": "index.py",
                 "modules": {"index.py": TENANT, "disarm.py": DISARM, "attacks.py": ATTACKS},
                 "global_outbound": None, **extra}
        return {key: value for key, value in built.items() if value is not OMITTED}
    return build


async def with_pool(body, *, logs=None, layers: Layers | None = None, memory_mb: int = 128):
    pool = IsolatePool(limits=IsolateLimits(memory_mb=memory_mb, cpu_ms=5_000), layers=layers,
                       log_sink=(lambda *line: logs.append(line)) if logs is not None else None)
    await pool.start()
    try:
        return await body(pool, WorkerLoader(pool))
    finally:
        await pool.close()


@pytest.fixture
def target(tmp_path):
    """What a hostile tenant goes after: the project's files, another tenant's source, the state
    database, a TCP and a Unix socket of the host, the host process itself."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the project's secret")
    secret.chmod(0o644)          # readable by any user: only the sandbox stands in the way
    other = tmp_path / "tenants" / "victim" / "index.py"
    other.parent.mkdir(parents=True)
    other.write_text("VICTIM = 'source'\n")
    database = tmp_path / "state.sqlite"
    database.write_bytes(b"SQLite format 3\x00")
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    unix_path = tmp_path / "host.sock"
    unix_server = socket.socket(socket.AF_UNIX)
    unix_server.bind(str(unix_path))
    unix_server.listen()
    unix_server.setblocking(False)
    import _ctypes
    before = sorted(p.name for p in tmp_path.iterdir())
    info = {"secret": str(secret), "other_source": str(other), "database": str(database),
            "folder": str(tmp_path), "port": server.getsockname()[1], "unix_socket": str(unix_path),
            "host_pid": os.getpid(), "ctypes_extension": _ctypes.__file__}
    yield info
    for listening in (server, unix_server):
        with pytest.raises(BlockingIOError):
            listening.accept()     # nothing ever connected
        listening.close()
    assert secret.read_text() == "the project's secret" and oct(secret.stat().st_mode)[-3:] == "644"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _refused(results: dict[str, str]) -> None:
    allowed = {name: outcome for name, outcome in results.items()
               if not name.startswith("__") and outcome.startswith("ok")}
    assert not allowed, allowed


def test_the_attacker_really_switches_off_the_python_checks():
    async def body(pool, loader):
        return await loader.get("hostile", code()).get_entrypoint().undo_checks()
    undone = run(with_pool(body))
    assert undone["policies"] == 1 and undone["hooks"] >= 3, undone
    assert undone["emulator"] == "emulator"


# Every way the zygote makes an isolate: (the hostile tenant's code dict, the code dict of a tenant
# loaded just before it, the path its isolate must have taken). Spares are prepared for one guard
# profile (the pool's memory limit, no network); another memory limit or the network on (no
# global_outbound) is forked on demand, and the zygote then prepares its spares for that profile.
SWITCHED = {"limits": {"memory_mb": 96}}
FORK_PATHS = {
    "spare": ({}, None, "spare"),
    "on demand": (SWITCHED, None, "on demand"),
    "on demand with the network on": ({"global_outbound": OMITTED}, None, "on demand"),
    "spare after a profile switch": (SWITCHED, SWITCHED, "spare"),
}


async def hostile_on(loader, path):
    """The hostile tenant's stub, its isolate made by fork path ``path`` (checked)."""
    extra, before, expected = FORK_PATHS[path]
    if before is not None:
        await loader.get("switcher", code(**before)).get_entrypoint().environment()
    stub = loader.get("hostile", code(**extra)).get_entrypoint()
    assert await stub.fork_path() == expected
    return stub


@pytest.mark.parametrize("path", FORK_PATHS, ids=list(FORK_PATHS))
def test_with_the_python_checks_off_every_attack_is_refused(target, path):
    async def body(pool, loader):
        stub = await hostile_on(loader, path)
        results = await stub.attack(target)
        neighbour = loader.get("neighbour", code()).get_entrypoint()
        return results, await neighbour.environment()
    results, neighbour_env = run(with_pool(body))
    _refused(results)
    sockets = [name for name in results if "socket" in name.lower() or name in (
        "TCP to the host", "UDP out", "Unix datagram pair")]
    assert len(sockets) >= 12, sockets
    for name in sockets:   # refused by seccomp before any address is looked at
        assert results[name] == "PermissionError: [Errno 1] Operation not permitted", name
    assert results["fork"] == "PermissionError: [Errno 1] Operation not permitted"
    assert results["set the clock"] == "PermissionError: [Errno 1] Operation not permitted"
    assert results["an anonymous in-memory file"] == "PermissionError: [Errno 1] Operation not permitted"
    assert results["load ctypes"].startswith(("ImportError", "PermissionError", "OSError"))
    assert results["find a native-call module already loaded"] == "LookupError: none is loaded"
    # its connection was made in the zygote's empty network namespace (as root, there always is
    # one): the host's interfaces are out of sight even to a query through it
    if IS_ROOT:
        assert results["the host's network interfaces, queried through its RPC connection"] == \
            "LookupError: no interface in sight"
    assert results["type into a terminal"] == "PermissionError: [Errno 1] Operation not permitted"
    if IS_ROOT:
        assert results["__uid"] >= sandbox.ISOLATE_ID_BASE
    assert neighbour_env.keys() <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED",
                                    "PYTHONUTF8", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PATH"}


@pytest.mark.parametrize("path", FORK_PATHS, ids=list(FORK_PATHS))
def test_every_thread_of_an_isolate_is_sandboxed_before_tenant_code_runs(target, path):
    async def body(pool, loader):
        stub = await hostile_on(loader, path)
        from_thread = await stub.attack_from_the_watchdog_thread(target)
        pid = pool.get_live("LOADER:hostile").pid
        filters = {tid: _seccomp_filters(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")} \
            if IS_ROOT else {}
        return pid, from_thread, _thread_credentials(pid), filters
    pid, from_thread, threads, filters = run(with_pool(body))
    assert from_thread, "the hijacked watchdog thread never ran"
    _refused(from_thread)
    assert len(threads) >= 2, threads   # the main thread and the CPU watchdog
    for tid, status in threads.items():
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", (tid, status)
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, (tid, status)
        assert int(status["CapPrm"], 16) == 0 and int(status["CapAmb"], 16) == 0, (tid, status)
        if IS_ROOT:   # real, effective, saved and file-system ids alike; no other group
            ids = status["Uid"].split() + status["Gid"].split()
            assert len(set(ids)) == 1 and int(ids[0]) >= sandbox.ISOLATE_ID_BASE, (tid, status)
            assert status["Groups"] == "", (tid, status)
    if IS_ROOT:   # each thread holds exactly the filter the seccomp test below exercises
        expected = [_reference_filter(pid)]
        assert filters.keys() == threads.keys()
        for tid, programs in filters.items():
            assert programs == expected, tid


def _thread_credentials(pid: int) -> dict[str, dict[str, str]]:
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            fields = dict(line.split(":", 1) for line in status.read().splitlines() if ":" in line)
        threads[tid] = {key: fields[key].strip() for key in
                        ("Seccomp", "NoNewPrivs", "CapEff", "CapBnd", "CapPrm", "CapAmb", "Uid",
                         "Gid", "Groups")}
    return threads


_PTRACE_DETACH, _PTRACE_SEIZE, _PTRACE_INTERRUPT, _PTRACE_SECCOMP_GET_FILTER = \
    17, 0x4206, 0x4207, 0x420c
_WALL = 0x40000000


def _seccomp_filters(tid: int) -> list[bytes]:
    """The seccomp programs thread ``tid`` carries, newest first, as the kernel holds them (read
    with ptrace, which needs root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    if libc.ptrace(_PTRACE_SEIZE, tid, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"cannot trace thread {tid}")
    programs = []
    try:
        libc.ptrace(_PTRACE_INTERRUPT, tid, None, None)
        os.waitpid(tid, _WALL)
        while True:
            count = libc.ptrace(_PTRACE_SECCOMP_GET_FILTER, tid, len(programs), None)
            if count < 0:
                assert ctypes.get_errno() == errno.ENOENT, ctypes.get_errno()
                return programs
            program = ctypes.create_string_buffer(count * 8)
            assert libc.ptrace(_PTRACE_SECCOMP_GET_FILTER, tid, len(programs), program) == count
            programs.append(program.raw)
    finally:
        libc.ptrace(_PTRACE_DETACH, tid, None, None)


def _reference_filter(isolate_pid: int) -> bytes:
    """The program ``seccomp_isolate`` installs for ``isolate_pid``, installed in a child of this
    test (the filter test below checks what it refuses) and read back from the kernel."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(write)
            sandbox._sandbox.seccomp_isolate(isolate_pid)
            os.read(read, 1)
        finally:
            os._exit(0)
    os.close(read)
    try:
        deadline = time.monotonic() + 10
        while True:   # until the child carries its filter
            with open(f"/proc/{pid}/status") as status:
                if "Seccomp:\t2" in status.read():
                    break
            assert time.monotonic() < deadline, "the child never installed its filter"
        programs = _seccomp_filters(pid)
    finally:
        os.close(write)
        os.waitpid(pid, 0)
    assert len(programs) == 1
    return programs[0]


def test_an_isolate_inherits_nothing_but_its_channel_and_empty_input():
    """Standard input reads empty; descriptors 1 and 2 are one pipe whose other end only the host
    holds; nothing of the host's or the zygote's (terminal, output, files, sockets) is open in the
    isolate. What else is open is its own: its RPC channel, its event loop's epoll and self-pipe
    pair, and path-only handles on the import folders (``sandbox._reach_import_paths...``)."""
    async def body(pool, loader):
        stub = loader.get("hostile", code()).get_entrypoint()
        stdin = await stub.read_stdin()
        pid = pool.get_live("LOADER:hostile").pid
        return stdin, _descriptors(pid), _descriptors(os.getpid()), \
            _descriptors(pool.zygote.process.pid)
    stdin, isolate, host, zygote = run(with_pool(body))
    assert stdin == ""
    assert isolate[0][0] == "/dev/null"
    output = isolate[1][0]
    assert output.startswith("pipe:") and isolate[2][0] == output
    assert [fd for fd, (link, _) in host.items() if link == output] != []   # the host reads it
    assert output not in {link for link, _ in zygote.values()}
    host_stdio = {host[fd][0] for fd in (0, 1, 2) if fd in host} - {"/dev/null"}
    zygote_own = {link for fd, (link, flags) in zygote.items() if not flags & os.O_PATH}
    kinds: dict[str, list[int]] = {}
    for fd, (link, flags) in isolate.items():
        assert link not in host_stdio, (fd, link)
        if fd in (0, 1, 2):
            continue
        assert link not in zygote_own - {"anon_inode:[eventpoll]"}, (fd, link)
        if flags & os.O_PATH:
            assert os.path.isdir(link), (fd, link)     # a handle to look up names, not to read
            kind = "folder"
        else:
            kind = link.split(":")[0]
        kinds.setdefault(kind, []).append(fd)
    assert set(kinds) <= {"socket", "anon_inode", "folder"}, kinds
    assert len(kinds["socket"]) == 3, kinds   # the RPC channel and the event loop's pair
    assert len(kinds["anon_inode"]) == 1, kinds


def _descriptors(pid: int) -> dict[int, tuple[str, int]]:
    """Each open descriptor of ``pid``: what it points to and its open flags."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
        except FileNotFoundError:     # closed meanwhile (this process's own listing)
            continue
        found[int(fd)] = (link, flags)
    return found


def test_what_an_isolate_writes_to_its_descriptors_is_its_own(capfd):
    logs: list[tuple[str, str, str]] = []
    marker = f"hostile-output-{os.getpid()}"

    async def body(pool, loader):
        await loader.get("hostile", code()).get_entrypoint().write_to_descriptors(marker)
        deadline = time.monotonic() + 10
        while sum(marker in line[2] for line in logs) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    run(with_pool(body, logs=logs))
    lines = [line for line in logs if marker in line[2]]
    assert {line[2] for line in lines} == {f"{marker} on fd 1", f"{marker} on fd 2",
                                           f"{marker} on sys.__stderr__"}
    assert {line[:2] for line in lines} == {("LOADER:hostile", "output")}
    captured = capfd.readouterr()
    assert marker not in captured.out and marker not in captured.err


@pytest.mark.skipif(not IS_ROOT, reason="a memory cgroup per isolate needs root")
def test_the_memory_cgroup_counts_what_the_address_space_limit_does_not():
    async def body(pool, loader):
        stub = loader.get("hostile", code()).get_entrypoint()
        with pytest.raises(Exception) as raised:
            await stub.fill_pipes(120)       # up to 120 MiB of pipe buffers, never mapped
        survivor = await loader.get("neighbour", code()).get_entrypoint().environment()
        return raised.value, survivor
    error, survivor = run(with_pool(body, memory_mb=48))
    assert getattr(error, "code", None) == "isolate.memory_limit", error
    assert "ran out of memory" in str(error)
    assert isinstance(survivor, dict)


def test_without_seccomp_and_landlock_the_network_namespace_alone_hides_the_host(target):
    async def body(pool, loader):
        return await loader.get("hostile", code()).get_entrypoint().attack(target)
    results = run(with_pool(body, layers=Layers(seccomp=False, landlock=False)))
    assert results["TCP to the host"].startswith("OSError: [Errno 101]"), results["TCP to the host"]


def test_with_seccomp_alone_no_descriptor_signals_the_zygote_or_a_neighbour():
    """What a host that is not root gets on a kernel without Landlock's signal scope: seccomp
    alone. A descriptor's signal owner (``F_SETOWN`` and its kin) would have the kernel send any
    signal to any process of the isolate's user, the zygote's whole group included."""
    async def body(pool, loader):
        neighbour = loader.get("neighbour", code()).get_entrypoint()
        await neighbour.environment()
        before = pool.get_live("LOADER:neighbour").pid
        armed = await loader.get("hostile", code()).get_entrypoint() \
            .kill_the_group_through_sigio()
        deadline = time.monotonic() + 1         # a signal would arrive at once; allow it time
        while time.monotonic() < deadline and pool.zygote.process.poll() is None:
            await asyncio.sleep(0.05)
        await neighbour.environment()
        return armed, before, pool.get_live("LOADER:neighbour").pid, pool.zygote.process.poll()
    armed, before, after, zygote_exit = run(with_pool(
        body, layers=Layers(user=False, landlock=False)))
    assert armed[:2] == ["PermissionError: [Errno 1] Operation not permitted"] * 2, armed
    assert zygote_exit is None and after == before


def test_a_layer_switched_off_or_missing_is_reported():
    missing = sandbox.missing_layers(Layers(landlock=False, seccomp=False))
    assert missing["landlock"] == "switched off" and missing["seccomp"] == "switched off"
    assert "user" not in missing or not IS_ROOT


# ---- the seccomp filter alone, for calls no standard-library module makes -----------------------

_NR = {"x86_64": {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321,
    "perf_event_open": 298, "reboot": 169, "syslog": 103, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "keyctl": 250, "add_key": 248,
    "request_key": 249, "shmget": 29, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "unshare": 272, "setns": 308, "mount": 165,
    "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "fsopen": 430,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
    "sethostname": 170, "setdomainname": 171, "pidfd_open": 434, "personality": 135,
    "userfaultfd": 323, "memfd_create": 319, "prlimit64": 302, "setrlimit": 160,
    "setpriority": 141, "sched_setaffinity": 203, "kill": 62, "tkill": 200, "execve": 59,
    "setuid": 105, "capset": 126, "swapon": 167, "acct": 163, "socket": 41, "socketpair": 53,
}}
_AF_INET, _AF_INET6, _AF_NETLINK, _AF_PACKET, _SOCK_STREAM, _SOCK_DGRAM, _SOCK_RAW = \
    2, 10, 16, 17, 1, 2, 3


@pytest.mark.skipif(os.uname().machine not in _NR, reason="system call numbers of x86-64 only")
def test_the_seccomp_filter_refuses_privileged_calls_even_to_root():
    """The calls no standard-library function makes (a tenant reaches them only through native
    code, which no module of an isolate offers): in a forked child of this test, with the filter
    and nothing else (still root, with every capability), each call gets EPERM. The arguments are
    harmless ones that would otherwise succeed or fail with another error (a null pointer: EFAULT;
    a bad descriptor: EBADF; a bad flag: EINVAL; a socket pair of a family that has none:
    EOPNOTSUPP). The isolates' threads carry this very program: the thread test above compares."""
    numbers = _NR[os.uname().machine]
    parent, nobody = os.getppid(), 0xFFFFFFFF
    calls = {
        "io_uring_setup": ("io_uring_setup", (1, 0)),
        "io_uring_enter": ("io_uring_enter", (-1, 0, 0, 0, 0, 0)),
        "io_uring_register": ("io_uring_register", (-1, 0, 0, 0)),
        "bpf": ("bpf", (0, 0, 0)), "perf_event_open": ("perf_event_open", (0, 0, -1, -1, 0)),
        "reboot": ("reboot", (0, 0, 0, 0)), "syslog": ("syslog", (10, 0, 0)),
        "init_module": ("init_module", (0, 0, 0)), "finit_module": ("finit_module", (-1, 0, 0)),
        "delete_module": ("delete_module", (0, 0)),
        "kexec_load": ("kexec_load", (0, 0, 0, nobody)),
        "kexec_file_load": ("kexec_file_load", (-1, -1, 0, 0, nobody)),
        "keyctl": ("keyctl", (0, -3, 0)), "add_key": ("add_key", (0, 0, 0, 0, 0)),
        "request_key": ("request_key", (0, 0, 0, 0)), "shmget": ("shmget", (0, 4096, 0)),
        "ptrace": ("ptrace", (2, parent, 0, 0)),
        "process_vm_readv": ("process_vm_readv", (parent, 0, 0, 0, 0, 0)),
        "process_vm_writev": ("process_vm_writev", (parent, 0, 0, 0, 0, 0)),
        "kcmp": ("kcmp", (parent, parent, 0, 0, 0)),
        "unshare": ("unshare", (0,)), "setns": ("setns", (-1, 0)),
        "mount": ("mount", (0, 0, 0, 0, 0)), "umount2": ("umount2", (0, 0)),
        "pivot_root": ("pivot_root", (0, 0)), "chroot": ("chroot", (0,)),
        "open_tree": ("open_tree", (-1, 0, 0)), "fsopen": ("fsopen", (0, 0)),
        "settimeofday": ("settimeofday", (0, 0)), "clock_settime": ("clock_settime", (0, 0)),
        "clock_adjtime": ("clock_adjtime", (0, 0)), "adjtimex": ("adjtimex", (0,)),
        "sethostname": ("sethostname", (0, 1)), "setdomainname": ("setdomainname", (0, 1)),
        "pidfd_open": ("pidfd_open", (parent, 0)), "personality": ("personality", (0xFFFFFFFF,)),
        "userfaultfd": ("userfaultfd", (0,)), "memfd_create": ("memfd_create", (0, 0)),
        "prlimit64 of another process": ("prlimit64", (parent, 7, 0, 0)),
        "setrlimit": ("setrlimit", (7, 0)),
        "setpriority of another process": ("setpriority", (0, parent, os.getpriority(0, 0))),
        "sched_setaffinity of another process": ("sched_setaffinity", (parent, 0, 0)),
        "kill another process": ("kill", (parent, 0)), "tkill": ("tkill", (parent, 0)),
        "execve": ("execve", (0, 0, 0)), "setuid": ("setuid", (0,)), "capset": ("capset", (0, 0)),
        "swapon": ("swapon", (0, 0)), "acct": ("acct", (0,)),
        "IPv4 raw socket": ("socket", (_AF_INET, _SOCK_RAW, 1)),
        "IPv4 UDP socket": ("socket", (_AF_INET, _SOCK_DGRAM, 0)),
        "IPv6 MPTCP socket": ("socket", (_AF_INET6, _SOCK_STREAM, 262)),
        "packet socket": ("socket", (_AF_PACKET, _SOCK_RAW, 0)),
        "netlink socket": ("socket", (_AF_NETLINK, _SOCK_RAW, 0)),
        "IPv4 socket pair": ("socketpair", (_AF_INET, _SOCK_STREAM, 0, 0)),
        "IPv6 socket pair": ("socketpair", (_AF_INET6, _SOCK_DGRAM, 0, 0)),
        "packet socket pair": ("socketpair", (_AF_PACKET, _SOCK_RAW, 0, 0)),
        "netlink socket pair": ("socketpair", (_AF_NETLINK, _SOCK_RAW, 0, 0)),
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: filter, then each call
        try:
            os.close(read)
            sandbox._sandbox.seccomp_isolate(os.getpid())
            libc = ctypes.CDLL(None, use_errno=True)
            outcome = []
            for label, (name, args) in calls.items():
                ctypes.set_errno(0)
                result = libc.syscall(numbers[name], *[ctypes.c_long(a) for a in args])
                outcome.append(f"{label.replace(' ', '_')}={result}/{ctypes.get_errno()}")
            tty = os.openpty()[1]
            import fcntl
            import termios
            try:
                fcntl.ioctl(tty, termios.TIOCSTI, b"x")
                outcome.append("TIOCSTI=0/0")
            except OSError as exc:
                outcome.append(f"TIOCSTI=-1/{exc.errno}")
            os.write(write, " ".join(outcome).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        outcome = dict(item.split("=") for item in pipe.read().split())
    os.waitpid(pid, 0)
    assert set(outcome) == {*(label.replace(" ", "_") for label in calls), "TIOCSTI"}
    assert {name: value for name, value in outcome.items()
            if value != f"-1/{errno.EPERM}"} == {}


# ---- a real dynwf dev: one tenant attacks, every other tenant keeps being served ----------------

MALLORY = textwrap.dedent('''
    from workers import Response, WorkerEntrypoint
    from attacks import run_attacks
    from disarm import disarm


    class Default(WorkerEntrypoint):
        async def fetch(self, request):
            disarm()
            return Response.json(run_attacks(await request.json()))
''')


def test_dynwf_dev_keeps_serving_every_other_tenant_while_one_attacks(tmp_path, servers):
    """Under a real `dynwf dev`, a tenant that switches off the Python checks and tries every
    attack is refused each time (by the kernel or the host), while another tenant's requests are
    served before, between and after (docs/reliability.md, "Hostile tenant code with the Python
    checks off")."""
    from dev_harness import copy_hello, start
    project = copy_hello(tmp_path)
    mallory = project / "tenants" / "mallory"
    mallory.mkdir()
    (mallory / "index.py").write_text(MALLORY)
    (mallory / "disarm.py").write_text(DISARM)
    (mallory / "attacks.py").write_text(ATTACKS)
    secret = project / "secret.txt"
    secret.write_text("the project's secret")
    dev = start(servers, project, "--no-reload")
    order = {"items": [{"price": 2.5, "quantity": 2}]}
    assert dev.post("acme", order)[0] == 200
    state = project / ".dynwf"
    import _ctypes
    target = {"secret": str(secret), "other_source": str(project / "tenants" / "acme" / "index.py"),
              "database": str(state / "state.sqlite"), "folder": str(project),
              "port": dev.port, "unix_socket": str(tmp_path / "none.sock"),
              "host_pid": dev.proc.pid, "ctypes_extension": _ctypes.__file__}
    for _ in range(3):
        status, results = dev.post("mallory", target)
        assert status == 200, results
        _refused(results)
        assert dev.post("acme", order)[0] == 200         # the neighbour, between attacks
    assert secret.read_text() == "the project's secret"
    assert not (project / "planted").exists()
    assert dev.proc.poll() is None                       # the dev server itself never fell


def test_dynwf_dev_says_once_at_start_which_layers_are_off_and_serves_on(tmp_path, servers,
                                                                       monkeypatch):
    """README, 'Where the kernel cannot do its part': a layer missing (here switched off on
    purpose) is named once at start, with what it means (the start record under NDJSON, the
    banner's warning line on a terminal); tenants are served in the layers that remain."""
    from dev_harness import copy_hello, start
    from dynwf_cli.commands.dev import _PlainOutput
    from dynwf_cli.console import console
    project = copy_hello(tmp_path)
    monkeypatch.setenv("DYNWF_WEAKEN_ISOLATION", "seccomp,network_namespace")
    dev = start(servers, project, "--no-reload")
    assert dev.post("acme", {"items": [{"price": 2.5, "quantity": 2}]})[0] == 200
    ready = dev.wait_for_record(kind="server.ready")
    assert ready["isolation_missing"] == {"seccomp": "switched off",
                                          "network_namespace": "switched off"}
    assert [line for line in dev.lines if "switched off" in line] == [json.dumps(
        ready, ensure_ascii=False, separators=(",", ":"))]
    with console.capture() as captured:      # what a person sees on a terminal, from that record
        _PlainOutput(None, False).banner(ready)   # type: ignore[arg-type]
    warnings = [line for line in captured.get().splitlines() if "isolation is weaker" in line]
    assert len(warnings) == 1, captured.get()
    assert "seccomp (no sockets, processes or machine-changing calls): switched off" in warnings[0]
    assert "a private network namespace: switched off" in warnings[0]
    assert "Landlock" not in warnings[0]


@pytest.mark.skipif(not IS_ROOT, reason="capabilities to lose need root")
def test_with_the_user_layer_off_an_isolate_still_holds_no_capability(target):
    """Switched off (``DYNWF_WEAKEN_ISOLATION=user``), isolates keep the host's user, as under a
    host that is not root, and like there hold no capability: root's would let a tenant raise its
    own limits, or reconfigure the host's network through the socket it talks to the host on."""
    async def body(pool, loader):
        stub = loader.get("hostile", code()).get_entrypoint()
        results = await stub.attack(target)
        return results, _thread_credentials(pool.get_live("LOADER:hostile").pid)
    results, threads = run(with_pool(body, layers=Layers(user=False)))
    assert results["__uid"] == 0
    assert results["force a socket buffer past the system's maximum"] == \
        "PermissionError: [Errno 1] Operation not permitted"
    for tid, status in threads.items():
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[field], 16) == 0, (tid, field, status)
