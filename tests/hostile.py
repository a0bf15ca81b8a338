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
