"""The audit hooks (``sys.addaudithook``): files, network, processes. Each refuses, with a clear
error in the platform's words, what a kernel layer of :mod:`emulator.isolates.sandbox` also
refuses; the tests prove the kernel's refusal with these hooks undone.

Refusals are plain ``PermissionError``, not a subclass: an error crosses RPC by its class name,
and only built-in names are rebuilt as themselves by the host.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Any, Iterable, NoReturn

from emulator.isolates.guard.folders import default_read_roots, is_under, site_package_dirs

#: The exact message of workerd when a Worker loaded with ``globalOutbound: null`` calls out.
NO_GLOBAL_OUTBOUND_MESSAGE = (
    "This worker is not permitted to access the internet via global functions like fetch(). "
    "It must use capabilities (such as bindings in 'env') to talk to the outside world.")

#: What a socket attempt says when the Worker has a network capability (``global_outbound``
#: omitted or a stub): sockets are never available in an isolate, ``fetch`` is.
SOCKETS_REFUSED_MESSAGE = (
    "Sockets are not available to tenant code in a dynamic worker: use fetch() from 'workers', "
    "which goes through the host and its global_outbound")


# ---- files ---------------------------------------------------------------------------------------

_FILE_READ_EVENTS = frozenset({"os.listdir", "os.scandir", "os.listxattr", "os.getxattr"})
_FILE_CHANGE_EVENTS = frozenset({
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.mkfifo", "os.mknod", "os.link",
    "os.symlink", "os.truncate", "os.chmod", "os.chown", "os.chflags", "os.utime",
    "os.setxattr", "os.removexattr", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
    "shutil.copytree", "shutil.rmtree", "shutil.move", "shutil.chown", "shutil.make_archive",
    "shutil.unpack_archive", "tempfile.mkstemp", "tempfile.mkdtemp"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _file_hook(roots: tuple[str, ...], excluded: tuple[str, ...]) -> Any:
    def refuse(what: str, path: Any) -> NoReturn:
        shown = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        raise PermissionError(errno.EACCES, f"{what} is not permitted in a dynamic worker", shown)

    def check_read(path: Any) -> None:
        if isinstance(path, int):
            return  # an open descriptor: nothing new is reached
        target = os.path.realpath(os.fsdecode(path if path is not None else "."))
        if not is_under(target, roots, excluded):
            refuse("Reading files outside the standard library", path)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = (*args, None, None)[:3]
            writes = (isinstance(flags, int) and flags & _WRITE_FLAGS) or \
                (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writes and not isinstance(path, int):
                refuse("Writing files", path)
            check_read(path)
        elif event in _FILE_READ_EVENTS:
            check_read(args[0] if args else None)
        elif event in _FILE_CHANGE_EVENTS:
            refuse(f"Changing files ({event})", args[0] if args else "")

    return hook


def restrict_files(allowed_read_roots: Iterable[str] | None = None) -> None:
    """Refuse writes everywhere and reads outside ``allowed_read_roots`` (default: stdlib, runtime),
    with clear errors: an audit hook on ``open`` (which ``io``, ``os.open`` and the import system
    all raise), directory listings and the ``os``/``shutil`` calls that change files;
    site-packages folders inside the standard library's folder stay unreadable. Landlock
    (:mod:`emulator.isolates.sandbox`) enforces the same in the kernel."""
    # as given: an isolate that gave up root may no longer be able to look above these folders
    roots = tuple(allowed_read_roots if allowed_read_roots is not None else default_read_roots())
    excluded = tuple(folder for folder in site_package_dirs() if folder not in roots)
    sys.addaudithook(_file_hook(roots, excluded))


# ---- network -------------------------------------------------------------------------------------

_NETWORK_EVENTS = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"})
_LOCAL_SOCKET_FAMILIES = frozenset({socket.AF_UNIX, -1})  # -1: wrapping an existing descriptor


def _network_hook(message: str) -> Any:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _NETWORK_EVENTS \
                or (event == "socket.__new__" and args[1] not in _LOCAL_SOCKET_FAMILIES) \
                or (event == "socket.sendmsg" and args[1] is not None):
            raise PermissionError(message)
    return hook


def block_network(allow_network: bool = False) -> None:
    """No connection, name lookup or datagram out, with the platform's message when the Worker has
    no ``global_outbound`` and a pointer to ``fetch`` otherwise. Sockets already connected (the
    RPC socket, an event loop's self-pipe) keep working. The seccomp filter refuses the same
    (and every socket but a connected Unix pair) in the kernel."""
    sys.addaudithook(_network_hook(SOCKETS_REFUSED_MESSAGE if allow_network
                                   else NO_GLOBAL_OUTBOUND_MESSAGE))


# ---- processes -----------------------------------------------------------------------------------

_PROCESS_EVENTS = frozenset({
    "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen"})


def _process_hook(event: str, args: tuple[Any, ...]) -> None:
    if event in _PROCESS_EVENTS:
        raise PermissionError(
            f"Starting processes is not permitted in a dynamic worker ({event})")
    if (event == "os.kill" and args[0] != os.getpid()) or event == "os.killpg":
        raise PermissionError(
            f"Sending signals to other processes is not permitted in a dynamic worker ({event})")
    if event == "resource.setrlimit" or (event == "resource.prlimit" and args[2] is not None):
        raise PermissionError(
            "Changing resource limits is not permitted in a dynamic worker")
    if event.startswith("ctypes."):
        raise PermissionError(f"Native code is not permitted in a dynamic worker ({event})")
    if event in ("syslog.openlog", "syslog.syslog", "socket.sethostname"):
        raise PermissionError(f"{event} is not permitted in a dynamic worker")


def restrict_processes() -> None:
    """Refuse child processes, signals to other processes, changed limits and ``ctypes``, with
    clear errors; the seccomp filter refuses them in the kernel."""
    sys.addaudithook(_process_hook)
