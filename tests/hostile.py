"""Tenant code that first switches off every Python-level check of its isolate, as an attacker's
would: the import policy is taken out (the modules it hid put back, ``__import__`` restored) and
every audit hook's code object is replaced by one that does nothing. Whatever such code is then
refused, the kernel or the host refused."""

DISARM = '''
import builtins, gc, sys, types


def _noop_code(freevars):
    names = "".join(f"    {name} = None\\n" for name in freevars)
    uses = "        " + (", ".join(freevars) if freevars else "None") + "\\n"
    source = f"def outer():\\n{names}    def hook(event, args):\\n{uses}        return None\\n" \\
             "    return hook\\n"
    namespace = {}
    exec(source, namespace)
    return namespace["outer"]().__code__


def disarm():
    """Undo the guard's Python checks; returns what was undone."""
    undone = {"policies": 0, "hooks": 0}
    for finder in list(sys.meta_path):
        if type(finder).__name__ == "ImportPolicy":
            builtins.__import__ = finder._original_import
            sys.meta_path.remove(finder)
            sys.modules.update(finder._hidden)
            sys.path[:] = list(dict.fromkeys([*sys.path, *finder._search_path]))
            undone["policies"] += 1
    # objects made before the zygote froze its heap are not in gc.get_objects(): modules reach them
    candidates = gc.get_objects() + [value for module in list(sys.modules.values())
                                     for value in list(getattr(module, "__dict__", {}).values())]
    seen = set()
    for obj in candidates:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType) and obj.__code__.co_varnames[:2] == ("event", "args") \\
                and obj.__module__ == "emulator.isolates.guard.audit_hooks":
            obj.__code__ = _noop_code(obj.__code__.co_freevars)
            undone["hooks"] += 1
            undone.setdefault("names", []).append(obj.__qualname__)
    return undone


def attempt(action):
    try:
        value = action()
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return f"ok: {value!r}"[:300]
'''

#: A tenant module: every attack the suite makes, each with the Python checks already off.
ATTACKS = '''
import os, socket, sys, time
from disarm import attempt


NATIVE_CALL_MODULES = ("_ctypes", "ctypes", "_testcapi", "_testinternalcapi", "_testmultiphase",
                       "_cffi_backend", "cffi", "_xxsubinterpreters")


def _native_call_module():
    """Any module that can call native code, among those loaded (the guard's own included)."""
    import gc
    found = sorted(name for name in sys.modules if name.split(".")[0] in NATIVE_CALL_MODULES)
    found += sorted({type(obj).__module__ for obj in gc.get_objects()
                     if type(obj).__module__ in NATIVE_CALL_MODULES})
    if found:
        return found
    raise LookupError("none is loaded")


def _interfaces_in_sight():
    """The network interfaces (with an address) that an interface query through each socket the
    isolate holds shows, its RPC connection among them: a socket answers for the network
    namespace it was made in."""
    import array, fcntl, struct
    seen = set()
    for fd in range(3, 256):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            buffer = array.array("B", bytes(40 * 64))
            asked = struct.pack("iL", len(buffer), buffer.buffer_info()[0])
            length = struct.unpack("iL", fcntl.ioctl(fd, 0x8912, asked))[0]   # SIOCGIFCONF
            seen.update(bytes(buffer[i:i + 16]).split(b"\\0")[0].decode()
                        for i in range(0, length, 40))
        except OSError:
            pass
        finally:
            sock.detach()
    if seen:
        return sorted(seen)
    raise LookupError("no interface in sight")


def target_pipe():
    """The read end of a fresh pipe (left open: the isolate ends with the test)."""
    return os.pipe()[0]


_HELD = []


def target_socket():
    """One end of a Unix stream pair, the one kind of socket an isolate may make (kept open)."""
    _HELD.append(socket.socketpair())
    return _HELD[-1][0]


def run_attacks(target, in_thread=False):
    import fcntl, resource, struct, termios
    secret, host = target["secret"], target["host_pid"]
    inf = resource.RLIM_INFINITY
    attacks = {
        "read a project file": lambda: open(secret).read(),
        "read another tenant's source": lambda: open(target["other_source"]).read(),
        "read the state database": lambda: open(target["database"], "rb").read(16),
        "write a file": lambda: open(os.path.join(target["folder"], "planted"), "w"),
        "change a file's mode": lambda: os.chmod(secret, 0o777),
        "read the host's environment": lambda: open(f"/proc/{host}/environ").read(),
        "open the terminal": lambda: open("/dev/tty", "w"),
        "TCP to the host": lambda: socket.create_connection(("127.0.0.1", target["port"]), 2),
        "UDP out": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b"x", ("127.0.0.1", target["port"])),
        "IPv6 socket": lambda: socket.socket(socket.AF_INET6),
        "MPTCP socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262),
        "packet socket": lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW),
        "netlink socket": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
        "Unix socket of the host": lambda: socket.socket(socket.AF_UNIX).connect(
            target["unix_socket"]),
        "Unix datagram pair": lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM),
        "raw IPv4 socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1),
        # the kernel itself answers EOPNOTSUPP to these pairs: EPERM is the filter's answer
        "IPv4 socket pair": lambda: socket.socketpair(socket.AF_INET, socket.SOCK_STREAM),
        "IPv6 socket pair": lambda: socket.socketpair(socket.AF_INET6, socket.SOCK_DGRAM),
        "packet socket pair": lambda: socket.socketpair(socket.AF_PACKET, socket.SOCK_RAW),
        "netlink socket pair": lambda: socket.socketpair(socket.AF_NETLINK, socket.SOCK_RAW),
        "fork": lambda: os.fork(),
        "spawn a program": lambda: os.posix_spawn("/bin/true", ["true"], {}),
        "signal the host": lambda: os.kill(host, 0),
        "signal the process group": lambda: os.kill(0, 0),
        # the kernel signals a descriptor's owner (here the zygote's group: every isolate) when
        # it is ready: four ways to name that owner
        "a signal owner for a descriptor": lambda: fcntl.fcntl(
            target_pipe(), fcntl.F_SETOWN, -os.getpgrp()),
        "a signal owner group for a descriptor": lambda: fcntl.fcntl(
            target_pipe(), 15, struct.pack("ii", 2, os.getpgrp())),       # F_SETOWN_EX, PGRP
        "a signal owner through ioctl": lambda: fcntl.ioctl(                # FIOSETOWN
            target_socket(), 0x8901, struct.pack("i", -os.getpgrp())),
        "a signal owner group through ioctl": lambda: fcntl.ioctl(          # SIOCSPGRP
            target_socket(), 0x8902, struct.pack("i", -os.getpgrp())),
        "the signal a descriptor sends": lambda: fcntl.fcntl(target_pipe(), 10, 9),  # F_SETSIG
        "lower the host's limits": lambda: resource.prlimit(
            host, resource.RLIMIT_NOFILE, (1, 1)),
        "raise its own memory limit": lambda: resource.setrlimit(
            resource.RLIMIT_AS, (inf, inf)),
        "raise its own memory limit through prlimit": lambda: resource.prlimit(
            0, resource.RLIMIT_AS, (inf, inf)),
        # past the system's maxima only with a capability (CAP_NET_ADMIN; CAP_SYS_RESOURCE)
        "force a socket buffer past the system's maximum": lambda: target_socket().setsockopt(
            socket.SOL_SOCKET, 33, 64 << 20),  # SO_RCVBUFFORCE
        "grow a pipe past the system's maximum": lambda: fcntl.fcntl(
            target_pipe(), 1031, 64 << 20),
        "renice the host": lambda: os.setpriority(os.PRIO_PROCESS, host, 19),
        "pin the host to a CPU": lambda: os.sched_setaffinity(host, {0}),
        "set the clock": lambda: time.clock_settime(time.CLOCK_REALTIME, time.time() + 3600),
        "set the hostname": lambda: socket.sethostname("hostile"),
        "an anonymous in-memory file": lambda: os.memfd_create("hidden"),
        "become root": lambda: os.setuid(0),
        "load ctypes": lambda: __import__("ctypes").CDLL(None),
        "find a native-call module already loaded": _native_call_module,
        "the host's network interfaces, queried through its RPC connection": _interfaces_in_sight,
        "read the ctypes extension": lambda: open(target["ctypes_extension"], "rb").read(4),
        "type into a terminal": lambda: fcntl.ioctl(2, termios.TIOCSTI, b"x"),
    }
    if not in_thread:  # shared memory makes a thread of its own in some versions
        from multiprocessing import shared_memory
        attacks["shared memory"] = lambda: shared_memory.SharedMemory(create=True, size=1 << 20)
    results = {name: attempt(action) for name, action in attacks.items()}
    results["__uid"] = os.getuid()
    return results
'''
