"""dynwf's emulator: config loading, the durable engine, isolates and the dev server.

The names in :data:`__all__` are the package's face: what the command line (``dynwf_cli``), the
pytest plugin and scripts may touch. Every other module is internal and may change; the dev
server offers its own names in :mod:`emulator.server`. This package never imports typer or
rich; the command line renders what it returns.

Names load on first use (a module ``__getattr__``), never when the package is imported: an
isolate's zygote imports ``emulator.rpc`` and ``emulator.sdk``, which runs this file first, and
must not load the host, the dev server or the engine's store (whose SQLite tooling brings
``ctypes``, a native-call capability no isolate may hold). The command line imports only the
invoked command's module, so a command loads the names it takes and nothing else of the package
(``dynwf --help`` none of the engine's).
"""

from __future__ import annotations

from emulator.lazy import lazy_names

__version__ = "0.1.0"

#: Where each name lives, grouped by what a caller does with it.
_EXPORTS: dict[str, tuple[str, ...]] = {
    # errors: the root (a dotted code, a message, a hint) and the families callers catch
    "emulator.errors": (
        "DynwfError", "UsageError", "ConfigError", "ValidationError", "PayloadError",
        "PayloadTooLargeError", "InstanceError", "InstanceNotFoundError",
        "InstanceAlreadyExistsError", "InstanceFinishedError", "InvalidTransitionError",
        "StepLimitError", "HistoryError", "ReplayDivergedError"),
    # a project: its wrangler file, its state folder, a new one from a template
    "emulator.project": ("DATABASE_NAME", "Project", "STATE_DIR_ENV", "STATE_DIR_NAME",
                         "open_project"),
    "emulator.config": ("Diagnostic", "ProjectConfig", "WorkflowConfig", "find_config",
                        "load_config"),
    "emulator.config.loader": ("CONFIG_NAMES",),
    "emulator.config.dev_vars": ("DEV_VARS_NAME", "parse_var"),
    "emulator.templates": ("DEFAULT_TEMPLATE", "backup_folder", "plan_template", "write_template"),
    # running it: the host, one run driven to its end, operations on instances
    "emulator.host": ("HostOptions", "ProjectHost"),
    "emulator.runner": ("RunOptions", "RunResult", "RunSession", "drive_to_end",
                        "waiting_event_types"),
    # the defaults every command and the plugin share
    "emulator.defaults": ("DEV_IP", "DEV_PORT", "ISOLATION", "ISOLATIONS", "POLL_MS"),
    "emulator.ops": ("InstanceOps", "StateNotFoundError"),
    # changing tenant code safely: replay checks, histories as files
    "emulator.replay": ("ReplayOutcome", "replay_history", "replay_project"),
    "emulator.engine.history": ("History", "parse_history"),
    "emulator.engine": ("Engine", "WorkflowBinding"),
    "emulator.engine.stores": ("DATABASE_ENV",),
    "emulator.clock": ("Clock", "SystemClock", "VirtualClock", "to_datetime"),
    "emulator.interpreter": ("tune_for_serving",),
    # the catalogue of error codes: each code's HTTP status and exit status
    "emulator.error_codes": ("Code", "exit_code", "http_status"),
    # what happens as it runs: progress events and their kinds, instance statuses, step keys
    "emulator.engine.progress": ("Progress",),
    "emulator.rules.steps": ("RESTART_STEP_TYPES", "StepKey", "StepKind", "StepStatus", "TimerKind"),
    # a cron schedule's firing, as dynwf dev reports it
    "emulator.engine.scheduler": ("Firing",),
    # checking code without running it
    "emulator.analysis.check": ("DEFAULT_ENTRY_CLASS", "CheckReport", "check_project",
                                "run_check"),
    "emulator.analysis.outline": ("OutlineStep", "TenantSourceError", "outline_steps"),
    # the platform's rules a caller checks input against or shows values with
    "emulator.rules.durations": ("format_ms", "parse_duration"),
    "emulator.rules.limits": ("check_event_type", "is_valid_id"),
    # a failed attempt's traceback, in the user's frames, as lines to read
    "emulator.tracebacks": ("format_traceback", "traceback_heading"),
    # the kernel layers of isolation this machine can put in place
    "emulator.isolates.sandbox": ("Layers", "describe_missing", "missing_layers"),
    # a command about to start a host: its isolates' zygote started first, to boot meanwhile
    "emulator.isolates.early": ("start_isolates_early", "stop_unadopted"),
}

#: Modules offered whole: vocabularies of named constants.
_MODULES = {
    "progress": "emulator.engine.progress",   # the kinds of progress events
    "states": "emulator.rules.states",        # instance statuses and their transitions
}

_HOMES = {name: home for home, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_HOMES, *_MODULES, "__version__"])


__getattr__ = lazy_names("emulator", globals(), _HOMES, _MODULES)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
