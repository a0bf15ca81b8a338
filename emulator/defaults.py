"""The emulator's default settings, each written once, with why it has its value.

Each of these is offered as a default in several places: the host's options, the isolate pool
and its limits, an isolate's own fallbacks, the engine and its worker's flags, the command
line's options and their help texts, the pytest plugin. They all read it from here, so a help
text cannot name one number while the code uses another. The platform's rules (sizes, waits,
step configs) are in ``rules/``; what is here is the emulator's own choice, or the platform's
figure where the emulator copies one.
"""

from __future__ import annotations

from typing import Final

# ---- isolates (isolates/pool.py, isolates/child.py) --------------------------------------------

#: Memory one isolate may use, in MiB: the platform's limit for a Worker isolate (128 MB). The
#: loader code's ``limits.memory_mb`` changes it for one tenant.
ISOLATE_MEMORY_MB: Final = 128
#: CPU time one call into an isolate may hold, in ms: the platform's default CPU limit for a
#: Worker invocation (docs/semantics.md §5). The loader code's ``limits.cpu_ms`` changes it.
ISOLATE_CPU_MS: Final = 30_000
#: Isolates alive at once in one host. The bound keeps the host's memory flat whatever the number
#: of tenants: with 10,000 tenants asleep at most 64 isolates were live, ~392 MB of PSS, and
#: 2,000 instances over 50 tenants ran within it (docs/benchmarks.md §3, §5).
MAX_ISOLATES: Final = 64
#: Seconds an isolate may go without a call before it is retired: a tenant used every few
#: minutes (a dev loop, a periodic job) keeps its warm isolate, and tenants gone quiet give their
#: memory back. A choice, not a measurement; a load to make room retires idle isolates sooner.
ISOLATE_IDLE_TIMEOUT_S: Final = 300.0
#: Seconds a load waits for a busy pool to free an isolate before it goes over the bound. Calls
#: may need each other (a dispatcher can call one tenant from inside another's call), so waiting
#: without end could deadlock; with the wait, 100 tenants starting at once peak at 64 isolates
#: instead of 100 (docs/benchmarks.md §5).
ISOLATE_ROOM_WAIT_S: Final = 5.0
#: Where tenant code runs: ``process``, an isolate process per tenant behind the kernel layers,
#: or ``inline``, in the host's own process (for pdb; no isolation at all).
ISOLATIONS: Final = ("process", "inline")
#: ``process``: what the platform promises, one tenant's code cannot reach another's.
ISOLATION: Final = "process"

# ---- the engine (engine/engine.py, engine/worker.py) -------------------------------------------

#: How long an engine's lease on an instance lasts unless renewed, in ms of wall-clock time. An
#: engine renews its leases every third of it while it runs instances; an engine that was killed
#: has its instances taken over by another within this time. Shorter costs more renewal writes,
#: longer a longer stall after a crash.
LEASE_MS: Final = 10_000
#: How often an engine looks at the database for what other processes changed (a command of
#: ``dynwf instances``, an expired lease), in ms: a command's effect shows within a quarter
#: second, for one cheap ``PRAGMA data_version`` read per look.
POLL_MS: Final = 250
#: Instances one engine runs at once. High, so that for dynamic workflows the isolate pool, not
#: the engine, is the bound (docs/benchmarks.md §5), and so that many instances' step commits
#: share each group commit (engine/engine.py).
ENGINE_CONCURRENCY: Final = 2_000

#: The longest retry back-off a step waits out inside the invocation of ``run()``, in ms; a longer
#: one ends the invocation (hibernates) and the retry runs in a replay (docs/semantics.md §4.9).
#: On the platform retries wait in the invocation, so state in ``run()``'s closure survives them;
#: a waiting invocation holds a coroutine, an isolate and a lease, which a sleeping instance must
#: not. Five minutes holds every back-off of the default policy (10 s doubling to 160 s) and of
#: any policy that retries within minutes, and keeps the cost bounded for longer ones.
RETRY_IN_INVOCATION_MS: Final = 5 * 60_000

# ---- dynwf dev (config/model.py, dynwf_cli/commands/dev.py) ------------------------------------

#: Loopback only: the admin API under ``/__dynwf/`` can pause, terminate and restart instances.
DEV_IP: Final = "127.0.0.1"
#: The port ``wrangler dev`` uses, so a project's scripts and habits carry over.
DEV_PORT: Final = 8787

#: The workflow ``dynwf dev``'s playground runs scratch tenants through (server/playground.py):
#: its code lives in the state folder, so only a dev server can run (or replay) its instances.
PLAYGROUND_WORKFLOW: Final = "__playground"
