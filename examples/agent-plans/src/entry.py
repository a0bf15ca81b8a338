"""The agent platform's dispatcher: each agent writes its own durable plan, as code.

An agent's plan is the Python a model wrote for its task, saved as ``agents/<agent>/plan.py``
(the checked-in plans stand in for model output). The dispatcher checks that the file parses and
defines ``Plan``, then loads it into an isolate of its own (no network, no file system, no
processes) with one more module, ``agent_tools.py`` (``src/agent_tools.py``), the platform's
side of tool calling. The plan reaches the world only through ``TOOLS``, a :class:`Toolbox` this
module creates for that agent.

Every tool call is a durable step, and a tool marked dangerous is called only after a human
approves it: the plan waits for an event of type ``human-approval``, for days if need be, while
holding no process; a restart of the server in the meantime loses nothing.

HTTP (``dynwf dev``):

- ``GET /agents``: the agents and the tool catalog;
- ``POST /agents/<agent>/runs`` with the plan's input as JSON: start a run;
- ``GET /agents/<agent>/runs/<id>``: its status;
- ``POST /agents/<agent>/runs/<id>/approve`` with ``{"approved": true, "by": "..."}``: answer
  the approval it waits for.
"""

import ast
import hashlib
import json
import re
from pathlib import Path

from workers import Response, RpcTarget, WorkerEntrypoint
# DynamicWorkflowBinding is imported to be exported: wrapped bindings call back through it.
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ROOT / "agents"
KNOWLEDGE = ROOT / "knowledge"
METRICS = ROOT / "data" / "metrics.json"
OUT = ROOT / "out"
TOOLKIT = Path(__file__).resolve().parent / "agent_tools.py"
AGENT_ID = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9-_]{0,99}$")
PLAN_CLASS = "Plan"


# ---- the tools ---------------------------------------------------------------------------------

def search_notes(agent, query, limit=3):
    """Paragraphs of the knowledge base that share the most words with ``query``."""
    words = set(re.findall(r"[a-z0-9]+", query.lower()))
    hits = []
    for path in sorted(KNOWLEDGE.glob("*.md")):
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            text = " ".join(paragraph.split())
            score = len(words & set(re.findall(r"[a-z0-9]+", text.lower())))
            if score and not text.startswith("#"):
                hits.append({"note": path.stem, "score": score, "text": text})
    hits.sort(key=lambda hit: (-hit["score"], hit["note"]))
    return hits[:limit]


def read_metrics(agent, service):
    """The current metrics of one service."""
    metrics = json.loads(METRICS.read_text(encoding="utf-8"))
    if service not in metrics:
        raise LookupError(f"no service {service!r} (services: {', '.join(sorted(metrics))})")
    return {"service": service, **metrics[service]}


def _record(agent, log, record):
    """Append ``record`` to ``out/<agent>/<log>`` once: the same record again (a retried step)
    is not appended twice. Returns the record with its id."""
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    path = OUT / agent / log
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if not any(json.loads(line)["id"] == key for line in lines):
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"id": key, **record}) + "\n")
    return {"id": key, **record}


def send_email(agent, to, subject, body):
    """Send an email (here: a line in out/<agent>/outbox.jsonl)."""
    return _record(agent, "outbox.jsonl", {"to": to, "subject": subject, "body": body})


def scale_service(agent, service, replicas):
    """Change a service's replica count in production (here: out/<agent>/changes.jsonl)."""
    current = read_metrics(agent, service)["replicas"]
    if not isinstance(replicas, int) or not 1 <= replicas <= 20:
        raise ValueError(f"replicas must be an int from 1 to 20, not {replicas!r}")
    return _record(agent, "changes.jsonl", {"service": service, "from": current, "to": replicas})


def write_report(agent, title, text):
    """Save a report as out/<agent>/reports/<title>.md."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "report"
    path = OUT / agent / "reports" / f"{slug}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    return {"file": path.relative_to(ROOT).as_posix(), "bytes": path.stat().st_size}


TOOLS = {
    "search_notes": (search_notes, False),
    "read_metrics": (read_metrics, False),
    "write_report": (write_report, False),
    "send_email": (send_email, True),
    "scale_service": (scale_service, True),
}


class Toolbox(RpcTarget):
    """The tools one agent's plan may call; each method runs here, in the dispatcher.

    A dangerous tool is refused unless the call carries a human's approval. That check keeps a
    plan that skipped ``agent_tools`` (and so never waited for anyone) from acting; it is not
    proof that a person answered, which is what the ``human-approval`` wait in ``agent_tools``
    is for.
    """

    def __init__(self, agent):
        self._agent = agent

    def catalog(self):
        return {name: {"dangerous": dangerous, "about": (fn.__doc__ or "").strip()}
                for name, (fn, dangerous) in TOOLS.items()}

    def call(self, name, args, approval=None):
        if name not in TOOLS:
            raise LookupError(f"no tool {name!r} (tools: {', '.join(TOOLS)})")
        fn, dangerous = TOOLS[name]
        if dangerous and not (isinstance(approval, dict) and approval.get("approved") is True):
            raise PermissionError(f"{name} is a dangerous tool: it needs a human's approval")
        if not isinstance(args, dict):
            raise TypeError("tool arguments are a dict of name to value")
        return fn(self._agent, **args)


# ---- loading plans -----------------------------------------------------------------------------

def agents():
    return sorted(p.name for p in AGENTS.iterdir() if (p / "plan.py").is_file())


def read_plan(agent):
    """The agent's plan source, after checking it is a plan: valid Python defining ``Plan``.
    Model output is checked before it runs, with an error that says what is wrong with it."""
    if not (isinstance(agent, str) and AGENT_ID.fullmatch(agent) and (AGENTS / agent / "plan.py").is_file()):
        raise LookupError(f"no agent {agent!r}: agents/{agent}/plan.py does not exist "
                          f"(agents: {', '.join(agents())})")
    source = (AGENTS / agent / "plan.py").read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=f"agents/{agent}/plan.py")
    except SyntaxError as exc:
        raise ValueError(f"agents/{agent}/plan.py is not valid Python: {exc.msg} "
                         f"(line {exc.lineno})") from None
    if not any(isinstance(node, ast.ClassDef) and node.name == PLAN_CLASS for node in tree.body):
        raise ValueError(f"agents/{agent}/plan.py defines no class {PLAN_CLASS}(WorkflowEntrypoint)")
    return source


def load_agent(env, agent):
    source = read_plan(agent)

    async def code():
        return {"compatibility_date": "2026-04-01", "main_module": "plan.py",
                "modules": {"plan.py": source,
                            "agent_tools.py": TOOLKIT.read_text(encoding="utf-8")},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": agent}),
                        "TOOLS": Toolbox(agent)},
                "global_outbound": None}
    return env.LOADER.get(f"agent-{agent}", code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_agent(ctx.env, ctx.metadata["tenantId"]).get_entrypoint(PLAN_CLASS))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        path = "/" + request.url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
        parts = [p for p in path.split("/") if p]
        if parts == ["agents"]:
            return Response.json({"agents": agents(), "tools": Toolbox("").catalog()})
        if len(parts) < 3 or parts[0] != "agents" or parts[2] != "runs":
            return Response.json({"error": "try GET /agents or POST /agents/<agent>/runs"},
                                 status=404)
        agent = parts[1]
        if agent not in agents():
            return Response.json({"error": f"no agent {agent!r}", "agents": agents()}, status=404)
        runs = wrap_workflow_binding({"tenantId": agent})
        if len(parts) == 3 and request.method == "POST":
            text = await request.text()
            instance = await runs.create({"params": json.loads(text) if text.strip() else {}})
            return Response.json({"id": instance.id, "agent": agent})
        if len(parts) == 4 and request.method == "GET":
            instance = await runs.get(parts[3])
            return Response.json({"id": instance.id, **await instance.status()})
        if len(parts) == 5 and parts[4] == "approve" and request.method == "POST":
            instance = await runs.get(parts[3])
            decision = await request.json()
            await instance.send_event({"type": "human-approval",
                                       "payload": {"approved": decision.get("approved") is True,
                                                   "by": decision.get("by", "someone")}})
            return Response.json({"id": instance.id, "approved": decision.get("approved") is True})
        return Response.json({"error": "no such route"}, status=404)
