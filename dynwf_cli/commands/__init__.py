"""Sub-commands, one module each (named as its command), each defining ``register(app)``.

:data:`COMMANDS` is the one list of them, in the order ``dynwf --help`` shows them, with the line
it shows for each: the root help is written from it, so listing the commands imports none of
them (``dynwf_cli/lazy.py``). A command's module registers itself with that same line.
"""

from __future__ import annotations

#: command -> its summary in ``dynwf --help`` (and the module ``dynwf_cli.commands.<command>``)
COMMANDS: dict[str, str] = {
    "init": "Create a project from a template.",
    "check": "Check a project's config and code without running it.",
    "run": "Run one instance in a tenant's code, with a live step checklist.",
    "dev": "Serve the project locally with hot reload.",
    "serve": "Run the project in production (health, metrics, graceful stop).",
    "replay": "Replay recorded histories against the tenants' current code.",
    "logs": "Print the log lines of the project's instances, oldest first.",
    "instances": "List, inspect and control workflow instances.",
}
