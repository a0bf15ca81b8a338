"""Runs inside the DBOS peer's own virtual environment (stdlib and ``dbos`` only).

The benchmark sends one JSON request per line on stdin and reads one JSON answer per line on the
protocol stream (the process's original stdout; DBOS's own output is sent to stderr). Workloads
mirror dynwf's: a 3-step workflow and a 100-step workflow of ``@DBOS.step`` functions, on the
SQLite system database (PostgreSQL with ``DYNWF_DBOS_DATABASE_URL``). "Create to complete" is
``DBOS.start_workflow`` then ``get_result()``.

    python dbos_driver.py STATE_DIR
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def main(state_dir: str) -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything DBOS prints goes to stderr, never into the protocol stream
    from dbos import DBOS
    import dbos as dbos_module

    database = os.path.join(os.path.abspath(state_dir), "dbos.sqlite")
    # DYNWF_DBOS_DATABASE_URL: DBOS's native backend, PostgreSQL (the cluster benchmark)
    url = os.environ.get("DYNWF_DBOS_DATABASE_URL") or f"sqlite:///{database}"
    DBOS(config={"name": "dynwf-bench", "system_database_url": url, "log_level": "WARNING"})

    @DBOS.step()
    def add_one(value: int) -> int:
        return value + 1

    @DBOS.workflow()
    def three_steps(value: int) -> int:
        first = add_one(value)
        second = add_one(first)
        return add_one(second)

    @DBOS.step()
    def identity(value: int) -> int:
        return value

    @DBOS.workflow()
    def hundred_steps(value: int) -> int:
        total = 0
        for i in range(100):
            total += identity(i)
        return total

    started = time.perf_counter()
    DBOS.launch()
    launch_s = time.perf_counter() - started
    version = getattr(dbos_module, "__version__", None)
    if version is None:
        from importlib.metadata import version as package_version
        version = package_version("dbos")

    def create_and_wait(workflow, value: int) -> None:
        DBOS.start_workflow(workflow, value).get_result()

    def latency(n: int) -> dict:
        values = []
        for i in range(n):
            start = time.perf_counter()
            create_and_wait(three_steps, i)
            values.append((time.perf_counter() - start) * 1000)
        return {"values": values}

    def steps(n: int) -> dict:
        start = time.perf_counter()
        for i in range(n):
            create_and_wait(hundred_steps, i)
        return {"steps_per_s": n * 100 / (time.perf_counter() - start)}

    def throughput(n: int, clients: int) -> dict:
        remaining = [n]
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                create_and_wait(three_steps, 1)
        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"per_s": n / (time.perf_counter() - start)}

    def rss() -> dict:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return {"rss_mb": int(line.split()[1]) / 1024}
        return {"rss_mb": None}

    protocol.write(json.dumps({"ready": True, "version": version, "launch_s": launch_s}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        try:
            if op == "quit":
                break
            if op == "latency":
                answer = latency(int(request["n"]))
            elif op == "steps":
                answer = steps(int(request["n"]))
            elif op == "throughput":
                answer = throughput(int(request["n"]), int(request.get("clients", 16)))
            elif op == "rss":
                answer = rss()
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # report, keep serving: one failed round is not a failed run
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(answer) + "\n")
    DBOS.destroy()
    protocol.close()


if __name__ == "__main__":
    main(sys.argv[1])
