"""Build hook: compiles ``emulator/isolates/_sandbox.c``, the isolates' kernel calls.

The extension is built next to its source (so an editable install imports it from the tree) and
shipped in the wheel. It is Linux-only; where there is no C compiler or no Linux, the build goes on
without it and dynwf reports at start which isolation layers are missing, instead of failing to
install.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("emulator") / "isolates" / "_sandbox.c"


class SandboxExtension(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        target = root / SOURCE.with_name("_sandbox" + sysconfig.get_config_var("EXT_SUFFIX"))
        if not sys.platform.startswith("linux"):
            return
        compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        command = [*compiler[:1], "-shared", "-fPIC", "-O2", "-Wall",
                   f"-I{sysconfig.get_paths()['include']}", str(root / SOURCE), "-o", str(target)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            print(f"dynwf: the isolate sandbox extension was not built ({detail.strip()[:500]}); "
                  "isolates will run without the kernel layers it provides", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["artifacts"].append(str(target.relative_to(root)))
