"""``python -m benchmarks [--quick] [--json]``: run the benchmarks and print their figures."""

from __future__ import annotations

import argparse
import json
import platform
import os

from benchmarks import engine_micro


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
               **engine_micro.run(quick=args.quick)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:40} {value}")


if __name__ == "__main__":
    main()
