"""The folders the guard reasons about: the standard library's, site-packages (never readable),
what tenant code may read, and where shared libraries load from (the Landlock ruleset allows them).

Each is computed once per process and cached; the guard package fills the caches when it is
imported, which the zygote does before any fork, so isolates do not pay for them.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
from typing import Iterable

from emulator.runtime import RUNTIME_PATH

#: The emulator package's folder (this file is ``emulator/isolates/guard/folders.py``).
EMULATOR_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


@functools.cache
def stdlib_roots() -> tuple[str, ...]:
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
            "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    paths = sysconfig.get_paths(vars=base)
    return _existing(paths["stdlib"], paths["platstdlib"])


@functools.cache
def site_package_dirs() -> tuple[str, ...]:
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    found = [*site.getsitepackages(), site.getusersitepackages()]
    for variables in (None, base):
        paths = sysconfig.get_paths(vars=variables)
        found += [paths["purelib"], paths["platlib"]]
    return tuple(dict.fromkeys(os.path.realpath(path) for path in found))


def _existing(*paths: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths if p and os.path.exists(p)))


def is_under(path: str, roots: Iterable[str], excluded: Iterable[str] = ()) -> bool:
    """Whether ``path`` is one of ``roots`` or inside one, and in none of ``excluded``."""
    def under(root: str) -> bool:
        return path == root or path.startswith(root.rstrip("/") + "/")
    return not any(under(root) for root in excluded) and any(under(root) for root in roots)


def default_read_roots() -> list[str]:
    """What tenant code may read: the standard library, the runtime, time zones, two devices.

    The emulator package's folder (which holds the runtime) is included so the emulator can load
    its own modules late and tracebacks can show its lines; its source is not a secret.
    """
    return list(_default_read_roots())


@functools.cache
def _default_read_roots() -> tuple[str, ...]:
    tz = (sysconfig.get_config_var("TZPATH") or "").split(os.pathsep)
    return _existing(*stdlib_roots(), RUNTIME_PATH, EMULATOR_DIR, *tz,
                     "/dev/null", "/dev/urandom")


@functools.cache
def shared_library_paths() -> tuple[str, ...]:
    """Folders of the shared libraries mapped now, where later ``dlopen`` calls look too."""
    folders: set[str] = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                if ".so" in os.path.basename(path) and not path.startswith(EMULATOR_DIR[1:]):
                    folders.add(os.path.dirname("/" + path))
    except OSError:
        pass
    return (*sorted(folders), "/etc/ld.so.cache")


def fill_caches() -> None:
    """Compute every folder list now (the zygote, before it forks)."""
    stdlib_roots(), site_package_dirs(), _default_read_roots(), shared_library_paths()
