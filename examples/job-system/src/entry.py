"""The job system's dispatcher: runs each customer's own processing logic over its uploads.

A customer is a folder of ``tenants/`` holding its code (``index.py``, a ``TenantWorkflow``);
its uploaded files are in ``data/<customer>/`` and its results go to ``out/<customer>/``. The
customer's code runs in an isolate with no file system and no network: everything it reads or
writes goes through ``FILES``, a :class:`JobFiles` capability the dispatcher creates for that
customer alone, so one customer can never read another's uploads.

A job is one workflow instance; the customer's code processes its file in batches, one step per
batch. Each batch's rows are written to a part file named by the batch's position, so a batch
retried after a failure (or re-run after a crash) overwrites its own part and nothing is written
twice; the merged result is built from the parts at the end.
"""

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path

from workers import Response, RpcTarget, WorkerEntrypoint
# DynamicWorkflowBinding is imported to be exported: wrapped bindings call back through it.
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

ROOT = Path(__file__).resolve().parent.parent
TENANTS = ROOT / "tenants"
UPLOADS = ROOT / "data"
RESULTS = ROOT / "out"
# The platform's id rule; it also keeps a header value from naming a folder outside TENANTS.
NAME = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9-_.]{0,99}$")
MAX_BATCH_ROWS = 5000


class JobFiles(RpcTarget):
    """One customer's uploads (read-only) and results, for its code to use through ``env.FILES``.

    Methods run here, in the dispatcher's process; rows cross to the customer's isolate as lists
    of dicts of strings. Names are plain file names: no folders, nothing outside the customer's own.
    """

    def __init__(self, customer):
        self._uploads = UPLOADS / customer
        self._results = RESULTS / customer
        self._cache = {}

    def _name(self, name, what="file"):
        if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"{what} name {name!r} is not a plain file name")
        return name

    def _rows(self, name):
        path = self._uploads / self._name(name)
        if not path.is_file():
            uploaded = sorted(p.name for p in self._uploads.glob("*.csv"))
            raise FileNotFoundError(f"no upload named {name!r} (uploads: {', '.join(uploaded) or 'none'})")
        stamp = path.stat().st_mtime_ns
        cached = self._cache.get(name)
        if cached is None or cached[0] != stamp:
            with path.open(newline="", encoding="utf-8") as f:
                cached = self._cache[name] = (stamp, list(csv.DictReader(f)))
        return cached[1]

    def uploads(self):
        """The customer's uploaded file names."""
        return sorted(p.name for p in self._uploads.glob("*.csv"))

    def count_rows(self, name):
        """How many data rows the upload ``name`` has (its header line not counted)."""
        return len(self._rows(name))

    def read_rows(self, name, offset, limit):
        """Rows ``offset`` to ``offset + limit`` of the upload ``name``, as dicts."""
        if not (isinstance(offset, int) and isinstance(limit, int) and offset >= 0
                and 0 < limit <= MAX_BATCH_ROWS):
            raise ValueError(f"read_rows needs 0 <= offset and 0 < limit <= {MAX_BATCH_ROWS}")
        return self._rows(name)[offset:offset + limit]

    def _job_dir(self, job):
        folder = self._results / self._name(job, "job")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_part(self, job, index, rows):
        """Write one batch's result rows as part ``index`` of ``job`` (replacing an earlier try)."""
        if not isinstance(index, int) or index < 0:
            raise ValueError("a part index is a non-negative int")
        folder = self._job_dir(job)
        text = _csv_text(rows)
        _write_atomic(folder / f"part-{index:05d}.csv", text)
        return {"part": index, "rows": len(rows)}

    def merge_parts(self, job, name, parts):
        """Concatenate parts ``0 .. parts - 1`` of ``job`` into the result file ``name``."""
        folder = self._job_dir(job)
        header, lines, missing = None, [], []
        for index in range(parts):
            path = folder / f"part-{index:05d}.csv"
            if not path.is_file():
                missing.append(index)
                continue
            part = path.read_text(encoding="utf-8").splitlines(keepends=True)
            if part:
                header = header or part[0]
                lines.extend(part[1:])
        if missing:
            raise FileNotFoundError(f"job {job}: parts {missing} were never written")
        text = (header or "") + "".join(lines)
        _write_atomic(folder / self._name(name), text)
        return {"file": f"out/{self._results.name}/{job}/{name}", "rows": len(lines),
                "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}

    def write_report(self, job, name, report):
        """Write a JSON report (a summary) beside the job's results."""
        _write_atomic(self._job_dir(job) / self._name(name), json.dumps(report, indent=2) + "\n")
        return {"file": f"out/{self._results.name}/{job}/{name}"}


def _csv_text(rows):
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _write_atomic(path, text):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_tenant_modules(customer):
    folder = TENANTS / customer
    return {path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(folder.rglob("*.py")) if "__pycache__" not in path.parts}


def is_customer(customer):
    return bool(customer and NAME.fullmatch(customer) and "." not in customer) \
        and (TENANTS / customer / "index.py").is_file()


def load_customer(env, customer):
    if not is_customer(customer):
        known = ", ".join(sorted(p.name for p in TENANTS.iterdir() if is_customer(p.name)))
        raise LookupError(f"no customer {customer!r}: tenants/{customer}/index.py does not exist "
                          f"(customers: {known})")

    async def code():
        return {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": read_tenant_modules(customer),
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": customer}),
                        "FILES": JobFiles(customer)},
                "global_outbound": None}
    return env.LOADER.get(customer, code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_customer(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("TenantWorkflow"))


class Default(WorkerEntrypoint):
    """``POST /`` with ``x-tenant-id: <customer>`` and ``{"file": "orders.csv"}`` submits a job;
    ``GET /?job=<id>`` with the same header reports on it. Both are the customer's own fetch."""

    async def fetch(self, request):
        customer = request.headers.get("x-tenant-id")
        if not is_customer(customer):
            return Response.json({"error": "unknown customer; send an x-tenant-id header naming "
                                           "a folder of tenants/"}, status=404)
        return await load_customer(self.env, customer).get_entrypoint().fetch(request)
