"""Build the status page into public/index.html; with --check, only validate services.json."""

import json
import sys
from pathlib import Path

from statuspage import BADGES, render

services = json.loads(Path("services.json").read_text(encoding="utf-8"))
problems = [f"{s.get('name', '?')}: unknown status {s.get('status')!r}"
            for s in services if s.get("status") not in BADGES]
if problems:
    sys.exit("invalid services.json:\n" + "\n".join(problems))
if "--check" in sys.argv:
    print(f"services.json: {len(services)} services, all valid")
else:
    out = Path("public") / "index.html"
    out.parent.mkdir(exist_ok=True)
    out.write_text(render(services), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
