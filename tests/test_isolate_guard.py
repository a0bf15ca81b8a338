"""The isolate guard, proven in real processes: each test starts a fresh interpreter that installs
the guard the way an isolate does and then runs tenant code served from memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from emulator.isolates import guard
from emulator.runtime import RUNTIME_PATH

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_NETWORK = guard.NO_GLOBAL_OUTBOUND_MESSAGE
REFUSED = ("is not available to tenant code in a dynamic worker: only the standard library, "
           "'workers', 'dynamic_workflows' and the tenant's own modules can be imported")
LANDLOCK_ABI = guard.landlock_abi()
MARK = "@@result@@"

# What an isolate does before tenant code runs; then it calls the tenant's ``main``.
PRELUDE = """
import json, socket, sys
from emulator.isolates import guard
import emulator.errors
config = json.loads(sys.argv[1])
inherited = [socket.socket(fileno=fd) for fd in config["fds"]]
emulator_errors = sys.modules["emulator.errors"]
report = guard.install_guard(modules=config["modules"], tenant_label="acme",
                             allow_network=config["allow_network"],
                             memory_mb=config["memory_mb"], landlock=config["landlock"],
                             seccomp=config.get("seccomp", True))
import index
tenant = index.main(config, inherited)
# the emulator's own late imports still resolve, to the modules already loaded
namespace = vars(emulator_errors)
exec("from emulator.rpc import target as _late_target", namespace)
import workers
runtime = {"late_import": namespace.pop("_late_target").RpcTarget is workers.RpcTarget}
print(MARK + json.dumps({"tenant": tenant, "runtime": runtime,
                         "landlock": ["landlock" not in report.kernel.missing,
                                      report.kernel.missing.get("landlock")],
                         "kernel": {"uid": report.kernel.uid,
                                    "missing": report.kernel.missing},
                         "address_space_limit": report.address_space_limit}))
""".replace("MARK", repr(MARK))

# A tenant helper: what an attempt did, as text.
PROBE = '''
def attempt(action):
    try:
        value = action()
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"ok: {value!r}"[:200]
'''


def run_isolate(cwd: Path, index: str, *, modules: dict[str, str] | None = None,
                allow_network: bool = False, memory_mb: int = 256, landlock: bool = True,
                pass_fds: tuple[int, ...] = (), **config: Any) -> dict[str, Any]:
    tenant_modules = {"index.py": textwrap.dedent(index), "probe.py": PROBE, **(modules or {})}
    payload = {"modules": tenant_modules, "allow_network": allow_network, "memory_mb": memory_mb,
               "landlock": landlock, "fds": list(pass_fds), **config}
    process = subprocess.run([sys.executable, "-c", PRELUDE, json.dumps(payload)], cwd=cwd,
                             env=_env(), pass_fds=pass_fds, capture_output=True, text=True,
                             timeout=60)
    assert process.returncode == 0, process.stderr
    line = next(line for line in process.stdout.splitlines() if line.startswith(MARK))
    return json.loads(line[len(MARK):])


def run_script(cwd: Path, script: str, *args: str) -> dict[str, Any]:
    process = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], cwd=cwd,
                             env=_env(), capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout.splitlines()[-1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), RUNTIME_PATH])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_tenant_modules_stdlib_and_runtime_import(tmp_path):
    result = run_isolate(tmp_path, """
        import sys
        import lib.util
        from pkg import VERSION
        from pkg.sub.mod import combined
        from workers import WorkflowEntrypoint
        import dynamic_workflows

        def main(config, inherited):
            fresh = "xml.dom.minidom" not in sys.modules
            import asyncio, csv, datetime, decimal, fractions, io, json, random, uuid
            import xml.dom.minidom, zoneinfo

            async def tick():
                await asyncio.sleep(0)
                return "ticked"
            try:
                zone = str(zoneinfo.ZoneInfo("Europe/Paris"))
            except zoneinfo.ZoneInfoNotFoundError:
                zone = "no time zone data"
            rows = list(csv.reader(io.StringIO("a,b\\n1,2\\n")))
            return {
                "util": lib.util.double(21), "combined": combined(), "version": VERSION,
                "files": [__file__, lib.util.__file__, sys.modules["pkg.sub.mod"].__file__],
                "lib_is_namespace": getattr(lib, "__file__", None) is None,
                "runtime": [WorkflowEntrypoint.__name__, dynamic_workflows.__name__],
                "decimal": str(decimal.Decimal("1.10") + decimal.Decimal("2.20")),
                "fraction": str(fractions.Fraction(2, 6)), "json": json.dumps({"a": [1]}),
                "asyncio": asyncio.run(tick()), "random": 0 <= random.random() < 1,
                "uuid": len(str(uuid.uuid4())), "year": datetime.datetime.now().year > 2000,
                "minidom_fresh": fresh,
                "minidom": xml.dom.minidom.parseString("<a>x</a>").documentElement.tagName,
                "csv": rows, "zone": zone,
            }
        """, modules={
            "lib/util.py": "def double(n):\n    return 2 * n\n",
            "pkg/__init__.py": "VERSION = '1.0'\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/mod.py": ("from .. import VERSION\nfrom . import helper\n\n"
                               "def combined():\n    return f'{VERSION}-{helper.NAME}'\n"),
            "pkg/sub/helper.py": "NAME = 'helper'\n",
        })
    tenant = result["tenant"]
    assert tenant["util"] == 42 and tenant["version"] == "1.0"
    assert tenant["combined"] == "1.0-helper"  # relative imports in a subpackage
    assert tenant["files"] == ["<tenant:acme>/index.py", "<tenant:acme>/lib/util.py",
                               "<tenant:acme>/pkg/sub/mod.py"]
    assert tenant["lib_is_namespace"] is True
    assert tenant["runtime"] == ["WorkflowEntrypoint", "dynamic_workflows"]
    assert tenant["decimal"] == "3.30" and tenant["fraction"] == "1/3"
    assert tenant["json"] == '{"a": [1]}' and tenant["asyncio"] == "ticked"
    assert tenant["random"] is True and tenant["uuid"] == 36 and tenant["year"] is True
    assert tenant["minidom_fresh"] is True and tenant["minidom"] == "a"
    assert tenant["csv"] == [["a", "b"], ["1", "2"]]
    if Path("/usr/share/zoneinfo/Europe/Paris").exists():
        assert tenant["zone"] == "Europe/Paris"
    assert result["runtime"] == {"late_import": True}


def test_platform_internals_packages_and_other_tenants_are_refused(tmp_path):
    result = run_isolate(tmp_path, """
        import importlib, importlib.util, sys
        from probe import attempt

        def main(config, inherited):
            out = {}
            for name in ["emulator", "emulator.engine.store", "dynwf_cli", "typer", "billing"]:
                out[name] = attempt(lambda: exec(f"import {name}", {}))
            out["import_module"] = attempt(lambda: importlib.import_module("emulator.rpc.peer"))
            out["ctypes"] = attempt(lambda: importlib.import_module("ctypes"))
            out["find_spec_typer"] = importlib.util.find_spec("typer") is None
            hidden = ("emulator", "dynwf_cli", "typer", "ctypes")
            out["cached"] = sorted(name for name in sys.modules if name.split(".")[0] in hidden)
            return out
        """)
    tenant = result["tenant"]
    assert tenant["emulator"] == f"ModuleNotFoundError: module 'emulator' {REFUSED}"
    # a submodule is refused at its package, before anything of the package runs
    assert tenant["emulator.engine.store"] == f"ModuleNotFoundError: module 'emulator' {REFUSED}"
    assert tenant["dynwf_cli"] == f"ModuleNotFoundError: module 'dynwf_cli' {REFUSED}"
    assert tenant["typer"] == f"ModuleNotFoundError: module 'typer' {REFUSED}"
    assert tenant["billing"] == f"ModuleNotFoundError: module 'billing' {REFUSED}"
    assert tenant["import_module"] == f"ModuleNotFoundError: module 'emulator' {REFUSED}"
    assert tenant["ctypes"].startswith("ModuleNotFoundError: module 'ctypes' is not available")
    assert tenant["find_spec_typer"] is True
    assert tenant["cached"] == []
    assert result["runtime"] == {"late_import": True}


def test_tracebacks_name_the_tenant_file_and_show_its_lines(tmp_path):
    result = run_isolate(tmp_path, """
        import linecache, traceback
        from lib import boom

        def main(config, inherited):
            try:
                boom.explode()
            except ValueError:
                first = traceback.format_exc()
            linecache.clearcache()
            try:
                boom.explode()
            except ValueError:
                again = traceback.format_exc()
            try:
                import broken
            except SyntaxError as exc:
                syntax = [exc.filename, exc.lineno]
            return {"first": first, "again": again, "syntax": syntax}
        """, modules={
            "lib/boom.py": ("def explode():\n    value = 1\n"
                            "    raise ValueError('boom from tenant code')\n"),
            "broken.py": "x = 1\ndef nope(:\n",
        })
    for text, line in ((result["tenant"]["first"], 7), (result["tenant"]["again"], 12)):
        assert f'File "<tenant:acme>/index.py", line {line}, in main' in text
        assert "    boom.explode()" in text
        assert 'File "<tenant:acme>/lib/boom.py", line 3, in explode' in text
        assert "    raise ValueError('boom from tenant code')" in text
    assert result["tenant"]["syntax"] == ["<tenant:acme>/broken.py", 2]


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "audit-hooks-only"])
def test_no_global_outbound_refuses_the_network_but_not_the_inherited_socket(tmp_path, landlock):
    server = socket.create_server(("127.0.0.1", 0))
    host_end, isolate_end = socket.socketpair()
    with server, host_end, isolate_end:
        host_end.settimeout(10)
        host_end.sendall(b"ping")
        result = run_isolate(tmp_path, """
            import asyncio, socket, urllib.request
            from probe import attempt

            def main(config, inherited):
                port, rpc = config["port"], inherited[0]
                received = rpc.recv(4).decode()
                rpc.sendall(b"pong")
                a, b = socket.socketpair()
                a.sendall(b"local")
                return {
                    "rpc": received,
                    "socketpair": b.recv(5).decode(),
                    "create_connection": attempt(
                        lambda: socket.create_connection(("127.0.0.1", port), timeout=2)),
                    "inet_socket": attempt(lambda: socket.socket(socket.AF_INET)),
                    "dns": attempt(lambda: socket.getaddrinfo("example.com", 443)),
                    "unix_connect": attempt(
                        lambda: socket.socket(socket.AF_UNIX).connect("/tmp/x.sock")),
                    "asyncio": attempt(
                        lambda: asyncio.run(asyncio.open_connection("127.0.0.1", port))),
                    "urllib": attempt(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/")),
                }
            """, pass_fds=(isolate_end.fileno(),), port=server.getsockname()[1], landlock=landlock)
        assert host_end.recv(4) == b"pong"
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever connected
    tenant = result["tenant"]
    assert tenant["rpc"] == "ping" and tenant["socketpair"] == "local"
    for key in ("create_connection", "inet_socket", "dns", "asyncio"):
        assert tenant[key] == f"PermissionError: {NO_NETWORK}", key
    # a Unix socket is not network, so no hook speaks for it: the kernel refuses every socket
    assert tenant["unix_connect"] == "PermissionError: [Errno 1] Operation not permitted"
    assert NO_NETWORK in tenant["urllib"]
    assert result["landlock"][0] is (landlock and LANDLOCK_ABI > 0)


def test_a_global_outbound_gives_fetch_never_a_socket(tmp_path):
    """With ``global_outbound`` omitted the Worker may reach the network, but only through
    ``fetch`` (the host makes the request): a socket is refused, with a pointer to fetch."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        result = run_isolate(tmp_path, """
            import socket
            from probe import attempt

            def main(config, inherited):
                def connect():
                    with socket.create_connection(("127.0.0.1", config["port"]), timeout=5):
                        return "connected"
                return {"tcp": attempt(connect), "file": attempt(lambda: open("/etc/passwd"))}
            """, allow_network=True, port=server.getsockname()[1])
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever connected
    assert result["tenant"]["tcp"] == f"PermissionError: {guard.SOCKETS_REFUSED_MESSAGE}"
    assert result["tenant"]["file"].startswith("PermissionError")


@pytest.mark.parametrize("landlock", [True, False], ids=["landlock", "audit-hooks-only"])
def test_files_are_read_only_and_limited_to_the_standard_library(tmp_path, landlock):
    existing = tmp_path / "existing.txt"
    existing.write_text("secret")
    import typer  # a third-party package of this environment
    result = run_isolate(tmp_path, """
        import json, os, pathlib, shutil, tempfile
        from probe import attempt

        def main(config, inherited):
            folder, existing = config["folder"], config["existing"]
            return {
                "passwd": attempt(lambda: open("/etc/passwd").read()),
                "write": attempt(lambda: open(os.path.join(folder, "out.txt"), "w")),
                "pathlib_write": attempt(lambda: pathlib.Path(folder, "p.txt").write_text("x")),
                "read_tmp": attempt(lambda: open(existing).read()),
                "append": attempt(lambda: open(existing, "a")),
                "remove": attempt(lambda: os.remove(existing)),
                "mkdir": attempt(lambda: os.mkdir(os.path.join(folder, "d"))),
                "listdir": attempt(lambda: os.listdir("/etc")),
                "tempfile": attempt(lambda: tempfile.mkstemp(dir=folder)),
                "site_packages": attempt(lambda: open(config["third_party"]).read()),
                "stdlib": attempt(lambda: len(open(json.__file__).read(3))),
                "relative": attempt(lambda: open("existing.txt").read()),
            }
        """, landlock=landlock, folder=str(tmp_path), existing=str(existing),
        third_party=typer.__file__)
    tenant = result["tenant"]
    assert tenant["passwd"] == ("PermissionError: [Errno 13] Reading files outside the standard "
                                "library is not permitted in a dynamic worker: '/etc/passwd'")
    assert tenant["write"] == ("PermissionError: [Errno 13] Writing files is not permitted in a "
                               f"dynamic worker: '{tmp_path / 'out.txt'}'")
    for key in ("pathlib_write", "read_tmp", "append", "remove", "mkdir", "listdir", "tempfile",
                "site_packages", "relative"):
        assert tenant[key].startswith("PermissionError: [Errno 13]"), (key, tenant[key])
    assert tenant["stdlib"] == "ok: 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"]
    assert existing.read_text() == "secret"
    assert result["landlock"][0] is (landlock and LANDLOCK_ABI > 0)


def test_memory_beyond_the_limit_raises_memory_error(tmp_path):
    result = run_isolate(tmp_path, """
        import resource
        from probe import attempt

        def main(config, inherited):
            return {
                "small": attempt(lambda: len(bytearray(32 * 1024 * 1024))),
                "large": attempt(lambda: len(bytearray(400 * 1024 * 1024))),
                "core": resource.getrlimit(resource.RLIMIT_CORE),
                "files": resource.getrlimit(resource.RLIMIT_NOFILE),
            }
        """, memory_mb=128)
    tenant = result["tenant"]
    assert tenant["small"] == f"ok: {32 * 1024 * 1024}"
    assert tenant["large"].startswith("MemoryError")
    assert tenant["core"] == [0, 0] and tenant["files"] == [256, 256]
    assert result["address_space_limit"] is not None


def test_tenant_code_cannot_undo_the_audit_hooks(tmp_path):
    result = run_isolate(tmp_path, """
        import os, resource, socket, subprocess, sys
        from probe import attempt

        def fork():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            return pid

        def fork_without_an_audit_event():
            # subprocess's own primitive: with a preexec_fn the child would run Python (a fork
            # bomb's way in); no audit event is raised for it, so the kernel must refuse it
            import _posixsubprocess
            read, write = os.pipe()
            return _posixsubprocess.fork_exec(
                [b"/bin/true"], [b"/bin/true"], True, (), None, None, -1, -1, -1, -1, -1, -1,
                read, write, True, False, -1, None, None, None, -1, lambda: os._exit(0), False)

        def main(config, inherited):
            sys.addaudithook(lambda event, args: None)
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            return {
                "file": attempt(lambda: open("/etc/passwd")),
                "network": attempt(lambda: socket.create_connection(("127.0.0.1", 9))),
                "raise_memory_limit": attempt(
                    lambda: resource.setrlimit(resource.RLIMIT_AS, unlimited)),
                "subprocess": attempt(lambda: subprocess.run(["true"])),
                "system": attempt(lambda: os.system("true")),
                "fork": attempt(fork),
                "fork_exec": attempt(fork_without_an_audit_event),
                "signal_parent": attempt(lambda: os.kill(os.getppid(), 0)),
                "signal_self": attempt(lambda: os.kill(os.getpid(), 0)),
            }
        """)
    tenant = result["tenant"]
    assert tenant["file"].startswith("PermissionError: [Errno 13] Reading files")
    assert tenant["network"] == f"PermissionError: {NO_NETWORK}"
    assert tenant["raise_memory_limit"] == (
        "PermissionError: Changing resource limits is not permitted in a dynamic worker")
    assert tenant["subprocess"] == ("PermissionError: Starting processes is not permitted in a "
                                    "dynamic worker (subprocess.Popen)")
    assert tenant["system"].startswith("PermissionError: Starting processes")
    assert tenant["fork"].startswith("PermissionError: Starting processes")
    assert tenant["fork_exec"].startswith("PermissionError: [Errno 1] Operation not permitted")
    assert tenant["signal_parent"].startswith("PermissionError: Sending signals to other processes")
    assert tenant["signal_self"] == "ok: None"


@pytest.mark.skipif(LANDLOCK_ABI == 0, reason="this kernel has no Landlock")
def test_landlock_alone_enforces_in_the_kernel(tmp_path):
    """With no audit hook at all, the Landlock ruleset still refuses what the guard refuses."""
    result = run_script(tmp_path, """
        import json, os, socket, subprocess, sys
        from emulator.isolates import _sandbox, guard, sandbox

        def attempt(action):
            try:
                return f"ok: {action()!r}"[:80]
            except OSError as exc:
                return f"{type(exc).__name__} errno {exc.errno}"

        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        ruleset, _granted = _sandbox.landlock_ruleset(sandbox.landlock_rules(
            guard.default_read_roots(), guard._shared_library_paths()))
        _sandbox.landlock_enforce(ruleset)

        class landlock:
            applied = True
        print(json.dumps({
            "applied": landlock.applied,
            "passwd": attempt(lambda: open("/etc/passwd").read()),
            "write": attempt(lambda: open(os.path.join(sys.argv[1], "x.txt"), "w")),
            "connect": attempt(lambda: socket.create_connection(("127.0.0.1", port))),
            "exec": attempt(lambda: subprocess.run(["/bin/true"])),
            "signal_parent": attempt(lambda: os.kill(os.getppid(), 0)),
            "stdlib": attempt(lambda: len(open(json.__file__).read(3))),
            "extension": attempt(lambda: __import__("_sqlite3").__name__),
        }))
        """, str(tmp_path))
    assert result["applied"] is True
    assert result["passwd"] == "PermissionError errno 13"
    assert result["write"] == "PermissionError errno 13"
    assert result["exec"] == "PermissionError errno 13"
    if LANDLOCK_ABI >= 4:
        assert result["connect"] == "PermissionError errno 13"
    if LANDLOCK_ABI >= 6:
        assert result["signal_parent"] == "PermissionError errno 1"
    assert result["stdlib"] == "ok: 3"
    assert result["extension"] == "ok: '_sqlite3'"
    assert list(tmp_path.iterdir()) == []
