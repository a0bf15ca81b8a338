"""Every error code dynwf gives, declared once: what it means, the HTTP status the admin API
answers with, the exit status of the command line, and whether it is retryable.

A code is a stable dotted string (``instance.not_found``) that users, tests and scripts match on;
it never changes meaning. An error class names its code as a class attribute (``code =
Code.INSTANCE_NOT_FOUND``): the coded errors of :mod:`emulator.errors` and the platform-named
errors of the runtime and the RPC (``MissingDispatcherMetadataError``, ``ConnectionLost``...)
alike, so each edge maps any of them the same way, through this table: the admin API by
:func:`http_status`, the command line by :func:`exit_code`. A code typed anywhere else, or a
status guessed from a code's spelling, is what this module replaces.

The columns:

- ``http_status``: the admin API's answer. Codes that no API route can meet keep the status the
  API gives an error it did not expect (500), or that of their family (400 for bad input).
- ``exit_code``: 2 for a command used the wrong way, 1 for everything else (the thing checked or
  run failed); docs/architecture.md §9 lists the exit statuses that are not errors.
- ``retryable``: whether the same call, repeated unchanged, may succeed: the cause is transient
  (a server at its limit) or the process that failed, not the input (an isolate that died under
  a step attempt, which the engine retries by the step's policy). Bad input, missing things and
  conflicts are not retryable.

Tried first: codes as free strings at each raise site, with statuses guessed from their last part
(``...invalid`` -> 400). A new code then had no status until someone noticed, and the command
line and the API could disagree on one error; here a code that is not in the table fails
``tests/test_error_codes.py``.
"""

from __future__ import annotations

from enum import StrEnum

#: Exit statuses of the command line for an error (the others are in docs/architecture.md §9).
EXIT_FAILED = 1
EXIT_USAGE = 2


class Code(StrEnum):
    """An error code: a ``str`` equal to its dotted spelling, with its meaning and mappings."""

    http_status: int
    exit_code: int
    retryable: bool
    meaning: str

    def __new__(cls, value: str, http_status: int, exit_code: int, retryable: bool,
                meaning: str) -> "Code":
        member = str.__new__(cls, value)
        member._value_ = value
        member.http_status, member.exit_code = http_status, exit_code
        member.retryable, member.meaning = retryable, meaning
        return member

    # ---- the root and the command line ---------------------------------------------------------
    DYNWF_ERROR = ("dynwf.error", 500, EXIT_FAILED, False,
                   "an error with no more precise code (the root's; nothing raises it as such)")
    USAGE_INVALID = ("usage.invalid", 400, EXIT_USAGE, False,
                     "a command, option or test-API call used in a way it cannot be")
    RUN_INVALID = ("run.invalid", 400, EXIT_FAILED, False,
                   "dynwf run has nothing to run: the config declares no workflows")
    STATE_NOT_FOUND = ("state.not_found", 404, EXIT_FAILED, False,
                       "the project has no state file: nothing has run yet (or --state-dir is wrong)")
    DATABASE_URL_INVALID = ("database.url_invalid", 400, EXIT_USAGE, False,
                            "--database / DYNWF_DATABASE_URL names a scheme dynwf cannot open "
                            "(sqlite:///path, a plain path, or postgresql://...)")
    DATABASE_UNAVAILABLE = ("database.unavailable", 503, EXIT_FAILED, True,
                            "the PostgreSQL database cannot be reached, or its connection was lost "
                            "in the middle of a transaction (nothing of that transaction was written)")

    # ---- the wrangler file ---------------------------------------------------------------------
    CONFIG_INVALID = ("config.invalid", 400, EXIT_FAILED, False,
                      "the wrangler file is unreadable, not JSONC/TOML, or holds a wrong value")
    CONFIG_INVALID_SCHEDULE = ("config.invalid_schedule", 400, EXIT_FAILED, False,
                               "a workflow's schedules hold a cron expression that does not "
                               "parse or never fires, or more schedules than the platform allows")
    CONFIG_NOT_FOUND = ("config.not_found", 500, EXIT_FAILED, False,
                        "no wrangler file where one was looked for")

    # ---- input to a workflow API (ids, durations, step configs, payloads) ----------------------
    INPUT_INVALID = ("input.invalid", 400, EXIT_FAILED, False,
                     "an argument of a workflow API is not of the form it must have")
    DURATION_INVALID = ("duration.invalid", 400, EXIT_FAILED, False,
                        "a duration that does not parse, or is out of range")
    STEP_INVALID_CONFIG = ("step.invalid_config", 400, EXIT_FAILED, False,
                           "a step config (retries, timeout) the platform refuses")
    STEP_INVALID_NAME = ("step.invalid_name", 400, EXIT_FAILED, False,
                         "a step name that is empty, too long or not a string")
    STEP_INVALID_CALL = ("step.invalid_call", 400, EXIT_FAILED, False,
                         "a call on a step handle with values a step client never sends")
    INSTANCE_INVALID_ID = ("instance.invalid_id", 400, EXIT_FAILED, False,
                           "an instance id that breaks the id rules (characters, length)")
    EVENT_INVALID_TYPE = ("event.invalid_type", 400, EXIT_FAILED, False,
                          "an event type that breaks the event type rules")
    STATUS_INVALID = ("status.invalid", 400, EXIT_FAILED, False,
                      "a status filter that names no instance status")
    PAYLOAD_INVALID = ("payload.invalid", 400, EXIT_FAILED, False,
                       "a value that cannot cross a durable boundary")
    PAYLOAD_TOO_LARGE = ("payload.too_large", 400, EXIT_FAILED, False,
                         "a value over the platform's size limit (1 MiB for params, outputs, events)")
    PAYLOAD_NOT_SERIALISABLE = ("payload.not_serialisable", 400, EXIT_FAILED, False,
                                "a value that is not JSON (a set, an object, NaN...)")
    PAYLOAD_TOO_DEEP = ("payload.too_deep", 400, EXIT_FAILED, False,
                        "a value nested deeper than a message between an isolate and the host may")

    # ---- instances -----------------------------------------------------------------------------
    INSTANCE_ERROR = ("instance.error", 500, EXIT_FAILED, False,
                      "an instance operation failed (the family's; nothing raises it as such)")
    INSTANCE_NOT_FOUND = ("instance.not_found", 404, EXIT_FAILED, False,
                          "no instance has that id (in that tenant's scope, when one is given)")
    INSTANCE_ALREADY_EXISTS = ("instance.already_exists", 409, EXIT_FAILED, False,
                               "an instance with that id exists already")
    INSTANCE_AMBIGUOUS = ("instance.ambiguous", 409, EXIT_FAILED, False,
                          "a short id that names instances of several tenants")
    INSTANCE_INVALID_TRANSITION = ("instance.invalid_transition", 409, EXIT_FAILED, False,
                                   "a status change the transition table refuses")
    INSTANCE_FINISHED = ("instance.finished", 409, EXIT_FAILED, False,
                         "the operation needs a live instance; this one is complete, errored "
                         "or terminated")
    INSTANCE_NOT_RUNNING = ("instance.not_running", 409, EXIT_FAILED, False,
                            "an event or a wake for an instance that has finished")
    INSTANCE_CANNOT_TERMINATE = ("instance.cannot_terminate", 409, EXIT_FAILED, False,
                                 "terminate of an instance that has finished")
    INSTANCE_CANNOT_RESTART = ("instance.cannot_restart", 404, EXIT_FAILED, False,
                               "restart from a step the instance's history does not hold "
                               "(name, count and type)")
    INSTANCE_WAIT_TIMEOUT = ("instance.wait_timeout", 504, EXIT_FAILED, True,
                             "--wait gave up: no engine moved the instance on within --timeout")

    # ---- a workflow's run: errors that end the instance ----------------------------------------
    WORKFLOW_FATAL = ("workflow.fatal", 500, EXIT_FAILED, False,
                      "the run broke a rule of the platform (a sleep over 365 days...) and ended")
    WORKFLOW_NOT_FOUND = ("workflow.not_found", 500, EXIT_FAILED, False,
                          "an instance of a workflow the engine has no definition of")
    REPLAY_MISMATCH = ("replay.mismatch", 500, EXIT_FAILED, False,
                       "the code reached a step other than the one the instance recorded")
    REPLAY_DIVERGED = ("replay.diverged", 500, EXIT_FAILED, False,
                       "a recorded history replayed against the current code reaches another "
                       "step than it recorded (dynwf replay, the pytest plugin's replay)")
    HISTORY_INVALID = ("history.invalid", 400, EXIT_FAILED, False,
                       "a history file to import or replay is not the documented format, or holds "
                       "a value out of range")
    STEP_LIMIT_EXCEEDED = ("step.limit_exceeded", 500, EXIT_FAILED, False,
                           "the instance reached its limit of steps")
    STEP_NOT_SERIALISABLE = ("step.not_serialisable", 500, EXIT_FAILED, False,
                             "a step returned a value that is not JSON")
    MODIFIER_MISUSE = ("modifier.misuse", 500, EXIT_FAILED, False,
                       "the test API used in a way the platform refuses")

    # ---- the dispatcher (the platform's dynamic-workflows library) -----------------------------
    DISPATCHER_MISSING_METADATA = ("dispatcher.missing_metadata", 500, EXIT_FAILED, False,
                                   "an instance created through the raw binding, not a wrapped one")
    DISPATCHER_MISCONFIGURED = ("dispatcher.misconfigured", 500, EXIT_FAILED, False,
                                "the dispatcher does not export DynamicWorkflowBinding, or lacks "
                                "the binding it names")
    LOADER_INVALID_CODE = ("loader.invalid_code", 500, EXIT_FAILED, False,
                           "a Worker Loader code callback returned something that is not a code "
                           "dict")
    WORKER_BAD_RESPONSE = ("worker.bad_response", 500, EXIT_FAILED, False,
                           "Default.fetch returned something that is not a Response")
    WORKER_EXCEPTION = ("worker.exception", 500, EXIT_FAILED, False,
                        "the dispatcher raised an error that carries no code")

    # ---- isolates and the RPC ------------------------------------------------------------------
    ISOLATE_CRASHED = ("isolate.crashed", 500, EXIT_FAILED, True,
                       "the isolate died under a call (a signal, an exit, a connection closed)")
    ISOLATE_PROTOCOL = ("isolate.protocol", 500, EXIT_FAILED, True,
                        "the isolate sent what the runtime never sends; the host killed it")
    ISOLATE_CPU_LIMIT = ("isolate.cpu_limit", 500, EXIT_FAILED, True,
                         "a call held the CPU past the limit; the isolate was stopped")
    ISOLATE_MEMORY_LIMIT = ("isolate.memory_limit", 500, EXIT_FAILED, True,
                            "the isolate ran out of its memory limit")
    RPC_FRAME_TOO_LARGE = ("rpc.frame_too_large", 500, EXIT_FAILED, False,
                           "the other side sent a frame over the bound of this connection")
    RPC_UNSERIALISABLE = ("rpc.unserialisable", 500, EXIT_FAILED, False,
                          "a value that cannot cross the isolate boundary")

    # ---- the tenant's code, the loader and the playground --------------------------------------
    TENANT_INVALID_PYTHON = ("tenant.invalid_python", 500, EXIT_FAILED, False,
                             "a tenant module that is not valid Python")
    PLAYGROUND_CHECK_FAILED = ("playground.check_failed", 400, EXIT_FAILED, False,
                               "dynwf check found errors in the playground's code; nothing ran")
    PLAYGROUND_CODE_MISSING = ("playground.code_missing", 500, EXIT_FAILED, False,
                               "a playground instance whose scratch code is gone from the state "
                               "directory")

    # ---- the admin API -------------------------------------------------------------------------
    ADMIN_INVALID = ("admin.invalid", 400, EXIT_FAILED, False,
                     "a request the admin API refuses: a field, a value, a body")
    ADMIN_FORBIDDEN = ("admin.forbidden", 403, EXIT_FAILED, False,
                       "a request not addressed to this machine's loopback")
    ADMIN_TOKEN = ("admin.token", 401, EXIT_FAILED, False,
                   "a state-changing request without the session's token")
    ADMIN_TOO_LARGE = ("admin.too_large", 413, EXIT_FAILED, False,
                       "a request body (or playground code) over its limit")
    TENANT_INVALID = ("tenant.invalid", 400, EXIT_FAILED, False,
                      "a tenant that is not an id")
    TENANT_NOT_FOUND = ("tenant.not_found", 404, EXIT_FAILED, False,
                        "a tenant with no folder in tenants/")

    # ---- dynwf dev -----------------------------------------------------------------------------
    DEV_NOT_FOUND = ("dev.not_found", 404, EXIT_FAILED, False,
                     "no emulator route or dashboard file at that path")
    DEV_OVERLOADED = ("dev.overloaded", 503, EXIT_FAILED, True,
                      "the dev server holds as many requests as it may; this one was not started")
    DEV_INVALID_LIMIT = ("dev.invalid_limit", 500, EXIT_FAILED, False,
                         "--max-inflight below 1 or --max-queued below 0")
    DEV_PORT_IN_USE = ("dev.port_in_use", 500, EXIT_FAILED, False,
                       "another process listens on the port")
    DEV_CANNOT_LISTEN = ("dev.cannot_listen", 500, EXIT_FAILED, False,
                         "the address cannot be listened on (not this machine's, or refused)")
    DEV_DISPATCHER_FAILED = ("dev.dispatcher_failed", 500, EXIT_FAILED, False,
                             "the dispatcher's module raised while it was imported")

    # ---- dynwf serve ---------------------------------------------------------------------------
    SERVE_TOKEN_REQUIRED = ("serve.token_required", 500, EXIT_USAGE, False,
                            "dynwf serve on an address other than loopback without an admin token")
    SERVE_TOKEN_FILE = ("serve.token_file", 500, EXIT_USAGE, False,
                        "--admin-token-file cannot be read, or holds no token")
    SERVE_WEAK_ISOLATION = ("serve.weak_isolation", 500, EXIT_FAILED, False,
                            "a kernel layer of tenant isolation is missing and "
                            "--allow-weak-isolation was not given")
    SERVE_ADMIN_OFF = ("serve.admin_off", 404, EXIT_FAILED, False,
                       "the admin API and dashboard of dynwf serve are not mounted: no admin token")

    # ---- dynwf init ----------------------------------------------------------------------------
    INIT_TEMPLATES_MISSING = ("init.templates_missing", 500, EXIT_FAILED, False,
                              "the project templates are not installed")
    INIT_UNKNOWN_TEMPLATE = ("init.unknown_template", 500, EXIT_USAGE, False,
                             "--template names no template")
    INIT_NOT_A_DIRECTORY = ("init.not_a_directory", 500, EXIT_FAILED, False,
                            "the target exists and is not a folder")
    INIT_NOT_EMPTY = ("init.not_empty", 500, EXIT_FAILED, False,
                      "the target folder is not empty and --force was not given")
    INIT_CONFLICT = ("init.conflict", 500, EXIT_FAILED, False,
                     "a path the template needs is taken by a file or folder of the other kind")
    INIT_WRITE_FAILED = ("init.write_failed", 500, EXIT_FAILED, False,
                         "the operating system refused a write; nothing was changed")


#: Codes of an isolate that died or was stopped under a call: the host gives them, never the
#: isolate (one an isolate claims is dropped), and the engine treats them as the attempt's fault.
ISOLATE_FAULTS = frozenset({Code.ISOLATE_CRASHED, Code.ISOLATE_PROTOCOL, Code.ISOLATE_CPU_LIMIT,
                            Code.ISOLATE_MEMORY_LIMIT})


def lookup(code: object) -> Code | None:
    """The catalogue's entry for ``code`` (a :class:`Code` or its spelling), None if it has none."""
    try:
        return Code(code)
    except ValueError:
        return None


def code_of(exc: BaseException) -> Code | None:
    """The catalogued code ``exc`` carries, or None: an error outside dynwf's, or one that
    carries a code of its own that is not dynwf's (a tenant's error, sent back over RPC)."""
    return lookup(getattr(exc, "code", None))


def http_status(code: object) -> int:
    """The admin API's status for an error with ``code``: an unknown code is an error the API
    did not expect (500)."""
    found = lookup(code)
    return found.http_status if found is not None else 500


def exit_code(code: object) -> int:
    """The command line's exit status for an error with ``code``."""
    found = lookup(code)
    return found.exit_code if found is not None else EXIT_FAILED


__all__ = ["Code", "EXIT_FAILED", "EXIT_USAGE", "ISOLATE_FAULTS", "code_of", "exit_code",
           "http_status", "lookup"]
