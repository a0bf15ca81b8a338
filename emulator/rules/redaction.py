"""What a person or a log may see of a step's output (docs/semantics.md §2.3, ``sensitive``).

A ``do`` step whose config says ``"sensitive": "output"`` keeps its real result in the store,
where the engine reads it to replay ``run()`` and to hand it to later steps; every view of the
step (``dynwf instances describe``, the admin API and the dashboard, the test API, the live
checklist) shows :data:`REDACTED` in its place. The decision is taken from the config persisted
with the step on its first attempt, so a replay whose code dropped the flag still redacts.

Written once here and applied where a step row becomes a view (``StepRow.to_public``), so a new
surface built on that view cannot forget it.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from emulator.rules.values import display_json

#: What a redacted output reads as, everywhere it would have been shown.
REDACTED = "[redacted]"
#: The one value of a step config's ``sensitive`` key.
SENSITIVE_OUTPUT = "output"


def is_output_sensitive(config_json: str | None) -> bool:
    """Whether a step's persisted config (JSON, or None for steps that have none) asks for its
    output to be redacted."""
    if not config_json or SENSITIVE_OUTPUT not in config_json:   # cheap test first: most are not
        return False
    try:
        config = json.loads(config_json)
    except ValueError:
        return False
    return isinstance(config, dict) and config.get("sensitive") == SENSITIVE_OUTPUT


def shown_result(config_json: str | None, result_json: str | None,
                 read: Callable[[str], Any] = display_json) -> Any:
    """A step's result as a view may show it: the value (read by ``read``: datetimes as ISO text
    by default), or :data:`REDACTED` for a sensitive step that has one (a step without a result
    shows None either way)."""
    if result_json is None:
        return None
    if is_output_sensitive(config_json):
        return REDACTED
    return read(result_json)
