"""Local values for the dispatcher's ``env``, as wrangler takes them: ``.dev.vars`` beside the
wrangler file (dotenv lines, secrets kept out of the config) and ``--var KEY:VALUE`` on the
command line. Precedence is wrangler's: ``--var`` over ``.dev.vars`` over the config's ``vars``."""

from __future__ import annotations

import re
from pathlib import Path

from emulator.errors import ConfigError, UsageError

__all__ = ["DEV_VARS_NAME", "load_dev_vars", "parse_var"]

DEV_VARS_NAME = ".dev.vars"
_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")


def load_dev_vars(root: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of ``root/.dev.vars`` (none when the file is absent): ``#``
    comments, blank lines and an ``export`` prefix allowed; a value in matching quotes is taken
    without them, ``\\n`` inside double quotes being a newline."""
    path = Path(root) / DEV_VARS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {DEV_VARS_NAME}: {exc}", path=DEV_VARS_NAME,
                          hint=f"save {DEV_VARS_NAME} as UTF-8 text of KEY=VALUE lines") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _LINE.fullmatch(line)
        if found is None:
            raise ConfigError("expected KEY=VALUE", path=DEV_VARS_NAME, line=number, column=1,
                              hint="one variable per line, e.g. API_TOKEN=abc123")
        key, value = found[1], found[2]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace("\\n", "\n") if value[0] == '"' else value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)     # a trailing comment after an unquoted value
        values[key] = value
    return values


def parse_var(text: str) -> tuple[str, str]:
    """One ``--var KEY:VALUE`` (wrangler's form), split at the first colon."""
    key, sep, value = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise UsageError(f"--var {text!r} must look like KEY:VALUE",
                         hint="e.g. --var API_HOST:localhost:8080 (split at the first colon)")
    return key, value
