"""A hostile tenant that first switches off every Python check of its isolate, then attacks: each
attack must be refused by a kernel layer or the host, and nothing changes for anyone else
(docs/reliability.md, "Hostile tenant code with the Python checks off"; README, "Isolates and
tenant isolation"). Run as root, as CI runs, so the privilege drop is exercised."""

from __future__ import annotations

import asyncio
import ctypes
import errno
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


''')


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def code(**extra):
    return lambda: {"compatibility_date": "2026-04-01", "main_module": "index.py",
                    "modules": {"index.py": TENANT, "disarm.py": DISARM, "attacks.py": ATTACKS},
                    "global_outbound": None, **extra}


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


# a spare child (the pool's memory limit) and a child forked on demand (another profile)
FORK_PATHS = {"spare": {}, "on demand": {"limits": {"memory_mb": 96}}}


@pytest.mark.parametrize("path", FORK_PATHS, ids=list(FORK_PATHS))
def test_with_the_python_checks_off_every_attack_is_refused(target, path):
    async def body(pool, loader):
        stub = loader.get("hostile", code(**FORK_PATHS[path])).get_entrypoint()
        results = await stub.attack(target)
        neighbour = loader.get("neighbour", code()).get_entrypoint()
        return results, await neighbour.environment()
    results, neighbour_env = run(with_pool(body))
    _refused(results)
    sockets = [name for name in results if "socket" in name.lower() or name in (
        "TCP to the host", "UDP out", "Unix datagram pair")]
    for name in sockets:   # refused by seccomp before any address is looked at
        assert results[name] == "PermissionError: [Errno 1] Operation not permitted", name
    assert results["fork"] == "PermissionError: [Errno 1] Operation not permitted"
    assert results["set the clock"] == "PermissionError: [Errno 1] Operation not permitted"
    assert results["an anonymous in-memory file"] == "PermissionError: [Errno 1] Operation not permitted"
    assert results["load ctypes"].startswith(("ImportError", "PermissionError", "OSError"))
    if IS_ROOT:
        assert results["__uid"] >= sandbox.ISOLATE_ID_BASE
    assert neighbour_env.keys() <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED",
                                    "PYTHONUTF8", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PATH"}


@pytest.mark.parametrize("path", FORK_PATHS, ids=list(FORK_PATHS))
def test_every_thread_of_an_isolate_is_sandboxed_before_tenant_code_runs(target, path):
    async def body(pool, loader):
        stub = loader.get("hostile", code(**FORK_PATHS[path])).get_entrypoint()
        from_thread = await stub.attack_from_the_watchdog_thread(target)
        pid = pool.get_live("LOADER:hostile").pid
        return from_thread, _thread_credentials(pid)
    from_thread, threads = run(with_pool(body))
    assert from_thread, "the hijacked watchdog thread never ran"
    _refused(from_thread)
    assert len(threads) >= 2, threads   # the main thread and the CPU watchdog
    for tid, status in threads.items():
        assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", (tid, status)
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, (tid, status)
        if IS_ROOT:
            assert int(status["Uid"].split()[0]) >= sandbox.ISOLATE_ID_BASE, (tid, status)


def _thread_credentials(pid: int) -> dict[str, dict[str, str]]:
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            fields = dict(line.split(":", 1) for line in status.read().splitlines() if ":" in line)
        threads[tid] = {key: fields[key].strip() for key in
                        ("Seccomp", "NoNewPrivs", "CapEff", "CapBnd", "Uid")}
    return threads


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


def test_a_layer_switched_off_or_missing_is_reported():
    missing = sandbox.missing_layers(Layers(landlock=False, seccomp=False))
    assert missing["landlock"] == "switched off" and missing["seccomp"] == "switched off"
    assert "user" not in missing or not IS_ROOT


# ---- the seccomp filter alone, for calls no standard-library module makes -----------------------

_NR = {"x86_64": {"io_uring_setup": 425, "bpf": 321, "perf_event_open": 298, "reboot": 169,
                  "syslog": 103, "init_module": 175, "keyctl": 250, "shmget": 29, "ptrace": 101,
                  "process_vm_readv": 310, "unshare": 272, "settimeofday": 164, "mount": 165,
                  "pidfd_open": 434, "personality": 135, "userfaultfd": 323, "add_key": 248}}


@pytest.mark.skipif(os.uname().machine not in _NR, reason="system call numbers of x86-64 only")
def test_the_seccomp_filter_refuses_privileged_calls_even_to_root():
    """In a forked child of this test, with the filter and nothing else (still root, with every
    capability), each call gets EPERM; the arguments are harmless ones that would otherwise
    succeed or fail with another error."""
    numbers = _NR[os.uname().machine]
    calls = {
        "io_uring_setup": (1, 0), "bpf": (0, 0, 0), "perf_event_open": (0, 0, -1, -1, 0),
        "reboot": (0, 0, 0, 0), "syslog": (10, 0, 0), "init_module": (0, 0, 0),
        "keyctl": (0, -3, 0), "shmget": (0, 4096, 0), "ptrace": (2, os.getppid(), 0, 0),
        "process_vm_readv": (os.getppid(), 0, 0, 0, 0, 0), "unshare": (0,),
        "settimeofday": (0, 0), "mount": (0, 0, 0, 0, 0), "pidfd_open": (os.getppid(), 0),
        "personality": (0xFFFFFFFF,), "userfaultfd": (0,), "add_key": (0, 0, 0, 0, 0),
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: filter, then each call
        try:
            os.close(read)
            sandbox._sandbox.seccomp_isolate(os.getpid())
            libc = ctypes.CDLL(None, use_errno=True)
            outcome = []
            for name, args in calls.items():
                result = libc.syscall(numbers[name], *[ctypes.c_long(a) for a in args])
                outcome.append(f"{name}={result}/{ctypes.get_errno()}")
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
    assert set(outcome) == {*calls, "TIOCSTI"}
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
