"""The platform's rules as pure functions and values: no state, no I/O, importable anywhere
(host, engine, isolate)."""
