"""The admin API of ``dynwf dev``, fuzzed (hypothesis): malformed JSON, wrong types, unknown ids,
bad query values and oversized bodies each get a coded 4xx, never a 5xx, and leave the state
database consistent: intact, and holding exactly the instances whose create was answered 2xx
(docs/reliability.md, "admin API fuzzed").

Most properties drive the Starlette app in this process, built as ``dynwf dev`` builds it
(``ProjectHost`` + ``create_app`` on a copy of examples/hello, lifespan and engine running);
one test speaks raw HTTP to a real ``dynwf dev`` process, for what only a socket can send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dev_harness import DYNWF, copy_hello, free_port
from emulator.rules import states
from emulator.host import HostOptions, ProjectHost
from emulator.project import open_project
from emulator.runtime.dynamic_workflows import scoped_instance_id, tenant_instance_id, wrap_params
from emulator.server import create_app
from emulator.server.exposure import read_token
from emulator.server.input import MAX_BODY, MAX_DEPTH
from emulator.server.playground import PLAYGROUND_WORKFLOW, lint_playground, sample_code

API = "/__dynwf/api"
TENANTS = ("acme", "globex")
WORKFLOW = "tenant-workflows"
ACTIONS = ("pause", "resume", "terminate", "restart", "wake")
ID_RULE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9\-_]*")
MAX_TENANT_INSTANCE_ID = 100                # the platform's whole length: the scope is kept beside
MAX_PAYLOAD = 1024 * 1024
MAX_QUERY_NUMBER = 2**63 - 1

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
FEW = settings(FUZZ, max_examples=12)


# ---- the app in this process ------------------------------------------------------------------

class AppClient:
    """Requests straight into an ASGI app, on an event loop of its own thread, with the app's
    lifespan (the host, the engine's scheduler) running from ``__init__`` to :meth:`close`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._lifespan_in: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan_out: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan: asyncio.Future[Any] | None = None
        self._run(self._start())

    def _run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        self._lifespan_in, self._lifespan_out = asyncio.Queue(), asyncio.Queue()
        self._lifespan_in.put_nowait({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.ensure_future(
            self.app(scope, self._lifespan_in.get, self._lifespan_out.put))
        message = await self._lifespan_out.get()
        assert message["type"] == "lifespan.startup.complete", message

    async def _stop(self) -> None:
        assert self._lifespan_in is not None and self._lifespan_out is not None
        self._lifespan_in.put_nowait({"type": "lifespan.shutdown"})
        message = await self._lifespan_out.get()
        assert message["type"] == "lifespan.shutdown.complete", message
        await self._lifespan

    def close(self) -> None:
        if self._lifespan is None:
            return
        try:
            self._run(self._stop())
        finally:
            self._lifespan = None
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def request(self, method: str, path: str, body: bytes = b"", *, query: bytes = b"",
                headers: dict[str, bytes] | None = None, stream: bool = False
                ) -> tuple[int, bytes]:
        """``(status, body)``; an exception the app lets out reads as the 500 a server would
        answer, its text after the body. ``stream``: hang up after the first chunk of the body
        (a server-sent events response never ends)."""
        sent = {"host": b"127.0.0.1:8787", **(headers or {})}
        return self._run(self._request(method, path, body, query, sent, stream), timeout=30)

    async def _request(self, method: str, path: str, body: bytes, query: bytes,
                       headers: dict[str, bytes], stream: bool) -> tuple[int, bytes]:
        answered = asyncio.Event()
        delivered = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if stream or not message.get("more_body", False):
                    answered.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": quote(path).encode(), "query_string": query, "root_path": "",
                 "headers": [(name.encode(), value) for name, value in headers.items()],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8787), "state": {}}
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - what a server would log and answer 500 for
            return status or 500, b"".join(chunks) + f" ({type(exc).__name__}: {exc})".encode()
        return status, b"".join(chunks)


@dataclass
class Created:
    """An instance the API answered 2xx for creating."""

    id: str
    metadata: dict[str, Any]

    @property
    def tenant(self) -> Any:
        return self.metadata.get("tenantId")

    @property
    def visible_id(self) -> str | None:
        return tenant_instance_id(self.metadata, self.id)


@dataclass(repr=False)
class Api:
    client: AppClient
    token: str
    project: Path
    database: Path
    created: dict[str, Created] = field(default_factory=dict)
    #: per property, how often each answer came: "201", "404 instance.not_found", ...
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    #: the real id of the acme order made first (a tenant's id may be taken twice later)
    order: str = ""

    def __repr__(self) -> str:
        return f"Api({len(self.created)} instances)"

    def call(self, property_name: str, method: str, path: str, body: bytes = b"", *,
             query: bytes = b"", token: bool = True, headers: dict[str, bytes] | None = None
             ) -> tuple[int, Any]:
        """The answer, checked to be an answer (see :func:`checked`), its JSON decoded."""
        sent = {"content-type": b"application/json", **(headers or {})}
        if token and method == "POST":
            sent.setdefault("x-dynwf-token", self.token.encode())
        status, raw = self.client.request(method, path, body, query=query, headers=sent)
        answer = checked(status, raw, f"{method} {path}?{query[:80]!r} {body[:200]!r}")
        outcome = f"{status} {answer['error']['code']}" if status >= 400 else str(status)
        self.outcomes.setdefault(property_name, Counter())[outcome] += 1
        if status == 201 and isinstance(answer, dict) and "id" in answer:
            self.created[answer["id"]] = Created(answer["id"], answer["metadata"])
        return status, answer

    def known_ids(self) -> set[str]:
        """Every id some instance answers to: real ids and the ids their tenants know."""
        ids = set(self.created)
        ids.update(c.visible_id for c in self.created.values() if c.visible_id)
        return ids

    def pick(self, index: int) -> str:
        """One of the ids known now (hypothesis draws ``index`` before the ids exist)."""
        ids = sorted(self.known_ids())
        return ids[index % len(ids)]


def checked(status: int, raw: bytes, what: str) -> Any:
    """The property every answer has: never a 5xx; a 2xx is JSON; a 4xx is JSON
    ``{"error": {"code", "message", ...}}`` with a non-empty dotted code and a message."""
    assert status < 500, f"{status} for {what}: {raw[:500]!r}"
    assert status in (200, 201) or 400 <= status < 500, f"{status} for {what}"
    try:
        answer = json.loads(raw)
    except ValueError:
        raise AssertionError(f"{status} for {what} is not JSON: {raw[:300]!r}") from None
    if status >= 400:
        error = answer.get("error") if isinstance(answer, dict) else None
        assert isinstance(error, dict), f"{status} for {what} without an error object: {answer}"
        assert isinstance(error.get("code"), str) and "." in error["code"], (what, error)
        assert isinstance(error.get("message"), str) and error["message"].strip(), (what, error)
    return answer


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``dynwf dev``'s app (process isolation, system clock) on a copy of examples/hello, with
    a few instances to act on: an acme order, and 'twin' in both tenants (an ambiguous id)."""
    project_dir = copy_hello(tmp_path_factory.mktemp("admin-fuzz"))
    project = open_project(project_dir / "wrangler.jsonc", project_dir / ".dynwf")
    host = ProjectHost(project.config, HostOptions(state_dir=project.state_dir))
    client = AppClient(create_app(host))
    token = read_token(project.state_dir)
    assert token
    fuzz = Api(client, token, project_dir, project.database)
    try:
        for body in ({"tenant": "acme", "id": "order-1", "params": {"items": [{"price": 2}]}},
                     {"tenant": "acme", "id": "twin"}, {"tenant": "globex", "id": "twin"}):
            status, answer = fuzz.call("seed", "POST", f"{API}/instances", encode(body))
            assert status == 201
            fuzz.order = fuzz.order or answer["id"]
        yield fuzz
    finally:
        client.close()


def assert_consistent(api: Api) -> None:
    """``PRAGMA integrity_check`` passes, the database holds exactly the instances the API
    answered 2xx for, and the playground kept code only for the scratch tenants that ran."""
    with contextlib.closing(sqlite3.connect(api.database, timeout=30)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in conn.execute("SELECT id FROM instances")}
    assert stored == set(api.created), (
        f"not answered 2xx: {sorted(stored - set(api.created))[:5]}; "
        f"answered 2xx but missing: {sorted(set(api.created) - stored)[:5]}")
    folder = api.database.parent / "playground"
    kept = {p.stem for p in folder.glob("*.py")} if folder.is_dir() else set()
    scratch = {str(c.tenant).removeprefix("scratch-") for c in api.created.values()
               if str(c.tenant).startswith("scratch-")}
    assert kept == scratch


# ---- bodies -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deep:
    """A JSON array ``levels`` deep, written as text (too deep for ``json.dumps``)."""

    levels: int

    def text(self) -> str:
        return "[" * (self.levels - 1) + "[1]" + "]" * (self.levels - 1)


@dataclass(frozen=True)
class Raw:
    """Bytes sent as they are."""

    data: bytes


def encode(value: Any) -> bytes:
    """``value`` as a JSON body (NaN and Infinity as Python writes them, a :class:`Deep` as its
    text); :class:`Raw` bytes as they are."""
    if isinstance(value, Raw):
        return value.data
    deep: dict[str, str] = {}

    def placeholder(item: Any) -> Any:
        if isinstance(item, Deep):
            key = f"\u0001deep{len(deep)}\u0001"
            deep[json.dumps(key)] = item.text()
            return key
        raise TypeError(type(item).__name__)

    text = json.dumps(_swap_deep(value, placeholder))
    for key, replacement in deep.items():
        text = text.replace(key, replacement)
    return text.encode()


def _swap_deep(value: Any, swap: Any) -> Any:
    if isinstance(value, Deep):
        return swap(value)
    if isinstance(value, dict):
        return {key: _swap_deep(inner, swap) for key, inner in value.items()}
    if isinstance(value, list):
        return [_swap_deep(inner, swap) for inner in value]
    return value


def depth(value: Any) -> int:
    if isinstance(value, Deep):
        return value.levels
    if isinstance(value, dict):
        return 1 + max((depth(inner) for inner in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(inner) for inner in value), default=0)
    return 0


def leaves(value: Any) -> Any:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from leaves(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from leaves(inner)
    else:
        yield value


def is_plain(value: Any) -> bool:
    """What the admin API takes as JSON: no NaN or Infinity, no lone surrogate, not too deep."""
    for leaf in leaves(value):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return False
        if isinstance(leaf, str):
            try:
                leaf.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return depth(value) <= MAX_DEPTH


def fits(params: Any, metadata: dict[str, Any]) -> bool:
    """Whether the stored envelope of ``params`` is within the 1 MiB payload limit."""
    if any(isinstance(leaf, Deep) for leaf in leaves(params)):
        return True                         # refused for its depth anyway, or small
    text = json.dumps(wrap_params(params, metadata), separators=(",", ":"), ensure_ascii=False)
    return len(text.encode()) <= MAX_PAYLOAD


scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
finite_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
odd_text = st.sampled_from([
    "", " ", "..", "../..", "../../etc/passwd", "a/b", "a\\b", "/tmp", "acme/", "acme\x00",
    "ac me", "ACME", "acme.", "é", "租户", "\u202eemca", "a" * 101, "a" * 5000, "\ud800", "null",
    "0", "-x",
])
wrong_types = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                        st.lists(scalars, max_size=3),
                        st.dictionaries(st.text(max_size=5), scalars, max_size=3),
                        odd_text, st.text(max_size=30))
deep_values = st.sampled_from([2, 50, 98, 99, 100, 101, 150, 5000]).map(Deep)
tenants = st.one_of(st.sampled_from(TENANTS), st.sampled_from(["nope", "scratch-x", "_x"]),
                    wrong_types)
good_ids = st.one_of(st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9_-]{0,20}", fullmatch=True),
                     st.sampled_from(["order-1", "twin", "x" * 87]))
instance_ids = st.one_of(st.none(), good_ids, st.just("x" * 88), wrong_types)
params = st.one_of(json_values, deep_values, wrong_types,
                   st.dictionaries(st.sampled_from(["items", "email", "x"]), json_values,
                                   max_size=3))
metadata = st.one_of(st.dictionaries(st.sampled_from(["tenantId", "plan", "x"]),
                                     st.one_of(st.sampled_from(TENANTS), wrong_types),
                                     max_size=3),
                     wrong_types)
unknown_keys = st.sampled_from(["param", "Tenant", "x", "", "tenantId", "payload"])
# the body is assembled from its keys, each present or not
create_objects = st.fixed_dictionaries({}, optional={
    "tenant": tenants, "params": params, "id": instance_ids,
    "workflow": st.one_of(st.just(WORKFLOW), st.just(""), st.just("nope"),
                          st.just(PLAYGROUND_WORKFLOW), wrong_types),
    "metadata": metadata,
}).flatmap(lambda body: st.dictionaries(unknown_keys, scalars, max_size=1).map(
    lambda extra: {**body, **extra}))
valid_creates = st.fixed_dictionaries({"tenant": st.sampled_from(TENANTS)}, optional={
    "params": finite_json, "id": good_ids, "workflow": st.just(WORKFLOW),
    "metadata": st.sampled_from(TENANTS).map(lambda tenant: {"tenantId": tenant, "plan": "pro"}),
}).map(lambda body: {**body, "tenant": body["metadata"]["tenantId"]} if "metadata" in body
       else body)
# a valid body with one field made wrong (or one added)
one_wrong = st.builds(lambda body, key, value: {**body, key: value}, valid_creates,
                      st.sampled_from(["tenant", "params", "id", "workflow", "metadata",
                                       "param", "Tenant"]),
                      st.one_of(wrong_types, deep_values))
noise = st.one_of(
    st.binary(max_size=300).map(Raw),
    st.text(alphabet='{}[]",:0123456789.eE+-tfnrualse \\\n', max_size=200)
    .map(lambda text: Raw(text.encode())),
    json_values, deep_values,
    st.sampled_from([Raw(b"{"), Raw(b'{"tenant": "acme"'), Raw(b"\xff\xfe{\x00}"),
                     Raw(b'{"tenant": "acme", "params": ' + b"1" * 5000 + b"}"),
                     Raw(b'{"tenant": "acme", "params": NaN}'),
                     Raw(b'{"tenant": "acme", "params": "\\ud800"}'),
                     Raw('{"tenant": "acme"}'.encode("utf-16")), Raw(b"null"), Raw(b"[]"),
                     Raw(b'\xef\xbb\xbf{"tenant": "acme"}'),
                     Raw(b'{"tenant": "acme", "tenant": "globex"}'),
                     Raw(b'{"tenant": "acme", "params": {"a": 1, "a": 2}}')]),
)


def create_refusal(api: Api, body: Any) -> str | None:
    """Why a create with ``body`` must be refused (``"exists"`` for an id taken), or None when
    it must succeed: the admin API's rules, written out again."""
    if not isinstance(body, dict):
        return "not an object"
    if set(body) - {"tenant", "params", "id", "workflow", "metadata"}:
        return "unknown field"
    if not is_plain(body):
        return "not plain JSON"
    tenant, meta = body.get("tenant"), body.get("metadata")
    if meta is None:
        if tenant not in TENANTS:
            return "tenant"
        meta = {"tenantId": tenant}
    elif not isinstance(meta, dict) or not meta:
        return "metadata"
    elif ("tenantId" in meta and meta["tenantId"] not in TENANTS) or (
            tenant is not None and meta.get("tenantId") != tenant):
        return "metadata's tenant"
    given_id = body.get("id")
    if given_id is not None and not (isinstance(given_id, str) and ID_RULE.fullmatch(given_id)
                                     and len(given_id) <= MAX_TENANT_INSTANCE_ID):
        return "id"
    if body.get("workflow") not in (None, WORKFLOW):
        return "workflow"
    if not fits(body.get("params", {}), meta):
        return "too large"
    if given_id is not None and scoped_instance_id(meta, given_id) in api.created:
        return "exists"
    return None


# ---- the properties ---------------------------------------------------------------------------

@FUZZ
@given(body=st.one_of(valid_creates, one_wrong, create_objects, noise))
def test_create_answers_201_exactly_for_valid_bodies(api, body):
    refusal = create_refusal(api, body)
    before = set(api.created)
    status, answer = api.call("create", "POST", f"{API}/instances", encode(body))
    if refusal is None:
        assert status == 201, (body, answer)
        assert answer["metadata"] == (body.get("metadata") or {"tenantId": body["tenant"]})
        assert answer["workflow"] == WORKFLOW
        if body.get("id") is not None:
            assert answer["tenant_instance_id"] == body["id"]
    elif refusal == "exists":
        assert status == 409 and answer["error"]["code"] == "instance.already_exists"
    else:
        assert 400 <= status < 500, (refusal, body, answer)
        assert set(api.created) == before


def test_create_fuzzing_leaves_the_database_consistent(api):
    assert_consistent(api)


event_types = st.one_of(st.sampled_from(["payment-received", "email-confirmed", "go", "a" * 100]),
                        st.sampled_from(["", "a b", "a.b", "a" * 101, "é", "\ud800"]), wrong_types)
def mostly(likely: st.SearchStrategy[Any], otherwise: st.SearchStrategy[Any],
           tenths: int = 5) -> st.SearchStrategy[Any]:
    """``likely`` about ``tenths`` times in ten, else ``otherwise``."""
    return st.integers(0, 9).flatmap(lambda i: likely if i < tenths else otherwise)


valid_events = st.fixed_dictionaries({"type": st.sampled_from(["payment-received", "go"])},
                                     optional={"payload": finite_json})
event_objects = st.fixed_dictionaries({}, optional={
    "type": event_types, "payload": st.one_of(json_values, deep_values, wrong_types)})
target_ids = mostly(st.integers(0, 10_000).map(lambda i: ("known", i)), st.one_of(
    st.text(max_size=40).map(lambda text: ("given", text)),
    st.sampled_from(["nope", "x" * 5000, "..", "%00", "twin\x00"]).map(lambda t: ("given", t))),
    tenths=6)
tenant_queries = mostly(st.none(), st.one_of(
    st.sampled_from(TENANTS), st.text(max_size=20).filter(lambda t: "\ud800" not in t)))


def target(api: Api, drawn: tuple[str, Any]) -> str:
    kind, value = drawn
    return api.pick(value) if kind == "known" else value


def tenant_query(tenant: str | None) -> bytes:
    return urlencode({"tenant": tenant}).encode() if tenant is not None else b""


def is_route_id(given: str) -> bool:
    """Whether ``given`` fills one path segment (else no route matches: a coded 404)."""
    return bool(given) and "/" not in given


@FUZZ
@given(drawn=target_ids, tenant=tenant_queries,
       body=mostly(valid_events, st.one_of(event_objects, noise), tenths=4))
def test_events_are_sent_only_to_a_known_instance_with_a_valid_type(api, drawn, tenant, body):
    given_id = target(api, drawn)
    status, answer = api.call("events", "POST", f"{API}/instances/{given_id}/events",
                              encode(body), query=tenant_query(tenant))
    valid_body = (isinstance(body, dict) and set(body) <= {"type", "payload"} and is_plain(body)
                  and isinstance(body.get("type"), str))
    if status == 200:
        assert valid_body and given_id in api.known_ids()
        assert len(body["type"]) <= 100 and ID_RULE.fullmatch(body["type"])
        assert answer["type"] == body["type"]
    if valid_body and is_route_id(given_id) and given_id not in api.known_ids():
        assert status == 404 and answer["error"]["code"] == "instance.not_found", answer


@FUZZ
@given(action=st.sampled_from(ACTIONS), drawn=target_ids, tenant=tenant_queries,
       body=st.one_of(st.just(Raw(b"")), noise))
def test_lifecycle_acts_only_on_a_known_instance(api, action, drawn, tenant, body):
    given_id = target(api, drawn)
    status, answer = api.call("lifecycle", "POST", f"{API}/instances/{given_id}/{action}",
                              encode(body), query=tenant_query(tenant))
    if status == 200:
        assert given_id in api.known_ids() and answer["id"] in api.created
    elif is_route_id(given_id) and given_id not in api.known_ids():
        assert status == 404 and answer["error"]["code"] == "instance.not_found", answer


playground_codes = mostly(
    st.sampled_from([sample_code(), sample_code() + "\n    oops(\n",
                     sample_code().replace("async def run", "def run"),
                     sample_code().replace("TenantWorkflow", "Workflow")]),
    st.one_of(st.text(max_size=200), st.just("   "), st.just("(" * 300 + ")" * 300),
              st.just("\ud800"), wrong_types))
playground_objects = st.fixed_dictionaries({"code": playground_codes}, optional={
    "params": mostly(finite_json, st.one_of(json_values, deep_values, wrong_types))})


@FUZZ
@given(body=mostly(playground_objects, noise, tenths=7))
def test_playground_runs_only_code_that_passes_the_check(api, body):
    status, answer = api.call("playground", "POST", f"{API}/playground", encode(body))
    if status == 201:
        assert isinstance(body, dict) and set(body) <= {"code", "params"} and is_plain(body)
        assert not [d for d in lint_playground(body["code"]) if d.severity == "error"]
        assert answer["workflow"] == PLAYGROUND_WORKFLOW
    elif status == 400 and answer["error"]["code"] == "playground.check_failed":
        assert answer["diagnostics"] and all(
            {"line", "column", "code"} <= set(d) for d in answer["diagnostics"])


def test_changes_leave_the_database_consistent(api):
    assert_consistent(api)


query_values = st.one_of(
    st.none(), st.just(""), st.integers().map(str),
    st.sampled_from(["-1", "0", "1", "abc", "1e3", "1.5", " 5", "5 ", "1_000", "٣", "0x10",
                     str(MAX_QUERY_NUMBER), str(MAX_QUERY_NUMBER + 1), "9" * 30, "9" * 5000]),
    st.sampled_from(list(states.ALL) + ["bogus", "Complete"]),
    st.text(max_size=20).filter(lambda t: "\ud800" not in t), st.sampled_from(TENANTS),
)


def number_ok(text: str | None, least: int) -> bool:
    if not text:
        return True
    return bool(re.fullmatch(r"-?[0-9]{1,19}", text)) and least <= int(text) <= MAX_QUERY_NUMBER


def query(values: dict[str, str | None]) -> bytes:
    return urlencode({k: v for k, v in values.items() if v is not None}).encode()


@FUZZ
@given(values=st.fixed_dictionaries({name: query_values for name in
                                     ("tenant", "status", "workflow", "limit", "x")}))
def test_list_answers_200_exactly_for_valid_filters(api, values):
    status, answer = api.call("list", "GET", f"{API}/instances", query=query(values))
    valid = number_ok(values["limit"], 1) and (not values["status"]
                                              or values["status"] in states.ALL)
    assert (status == 200) == valid, (values, answer)
    if status == 200:
        assert isinstance(answer, list) and all(row["id"] in api.created for row in answer)
        if values["limit"]:
            assert len(answer) <= int(values["limit"])


@FUZZ
@given(route=st.sampled_from(["", "/logs", "/outline"]), drawn=target_ids,
       tenant=tenant_queries, after=query_values)
def test_reading_an_instance_answers_only_for_a_known_one(api, route, drawn, tenant, after):
    given_id = target(api, drawn)
    values = {"tenant": tenant, "after": after}
    status, answer = api.call("read", "GET", f"{API}/instances/{given_id}{route}",
                              query=query(values))
    after_ok = route != "/logs" or number_ok(after, 0)
    if status == 200:
        assert given_id in api.known_ids() and after_ok and answer["id"] in api.created
    elif is_route_id(given_id) and given_id not in api.known_ids() and after_ok:
        assert status == 404 and answer["error"]["code"] == "instance.not_found", answer


@settings(FUZZ, max_examples=40)
@given(instance=st.one_of(st.none(), st.text(max_size=30).filter(lambda t: "\ud800" not in t),
                          st.integers(0, 100).map(str)))
def test_progress_stream_opens_for_any_filter(api, instance):
    status, raw = api.client.request("GET", f"{API}/events", query=query({"instance": instance}),
                                     stream=True)
    assert status == 200 and raw.startswith(b": connected")


@FUZZ
@given(query_bytes=st.binary(max_size=80),
       path=st.sampled_from(["/instances", "/instances/{order}", "/instances/{order}/logs",
                             "/instances/twin/outline", "/playground/sample"]))
def test_raw_query_strings_never_break_a_read(api, query_bytes, path):
    api.call("raw query", "GET", API + path.format(order=api.order), query=query_bytes)


header_values = st.one_of(st.binary(max_size=40), st.sampled_from([
    b"127.0.0.1", b"localhost:8787", b"[::1]:8787", b"[::1", b"http://[x]", b"evil.example",
    b"127.0.0.1.evil.example", b"\xff\xfe", b"", b"http://localhost:8787"]))


def test_guard_headers_never_crash_and_only_the_token_opens(api):
    """Host, Origin and token headers of any bytes, on a wake of a live instance of its own."""
    status, answer = api.call("guard", "POST", f"{API}/instances", encode({"tenant": "globex"}))
    assert status == 201
    live = answer["id"]

    @FUZZ
    @given(host=mostly(st.sampled_from([b"127.0.0.1:8787", b"localhost", b"[::1]"]),
                       header_values),
           origin=mostly(st.none(), header_values),
           token=mostly(st.just("right"), st.one_of(st.none(), st.binary(max_size=60))))
    def wake(host, origin, token):
        headers = {"host": host}
        if origin is not None:
            headers["origin"] = origin
        if token is not None:
            headers["x-dynwf-token"] = api.token.encode() if token == "right" else token
        status, _ = api.call("guard", "POST", f"{API}/instances/{live}/wake", token=False,
                             headers=headers)
        assert status in (200, 401, 403), status
        if status == 200:
            assert token == "right" or token == api.token.encode()

    wake()


@dataclass(frozen=True)
class Big:
    """A large body, built when sent (so a failing example prints short)."""

    path: str
    what: str

    def body(self) -> Any:
        return {
            "params just under 1 MiB": {"tenant": "acme", "params": "x" * (MAX_PAYLOAD - 10)},
            "params over the body limit": {"tenant": "acme", "params": "x" * (MAX_BODY + 1)},
            "blanks over the body limit": Raw(b" " * (MAX_BODY + 1)),
            "a 1 MiB payload": {"type": "go", "payload": "x" * MAX_PAYLOAD},
            "escaped text over the body limit": {"type": "go", "payload": "é" * (MAX_BODY // 2)},
            "code over 1 MiB": {"code": "#" * (MAX_PAYLOAD + 1)},
            "params of 1.1 MB": {"code": sample_code(), "params": ["x" * 1000] * 1100},
        }[self.what]


big_bodies = st.sampled_from([
    Big("/instances", "params just under 1 MiB"),           # 400: the envelope is over 1 MiB
    Big("/instances", "params over the body limit"),         # 413
    Big("/instances", "blanks over the body limit"),
    Big("/instances/{order}/events", "a 1 MiB payload"),
    Big("/instances/{order}/events", "escaped text over the body limit"),
    Big("/playground", "code over 1 MiB"),
    Big("/playground", "params of 1.1 MB"),
])


@FEW
@given(case=big_bodies)
def test_oversized_bodies_are_refused_with_nothing_written(api, case):
    path = case.path.format(order=api.order)
    raw = encode(case.body())
    before = set(api.created)
    status, answer = api.call("oversized", "POST", API + path, raw)
    assert 400 <= status < 500, answer
    if len(raw) > MAX_BODY:
        assert status == 413 and answer["error"]["code"] == "admin.too_large"
    else:
        assert answer["error"]["code"] in ("payload.too_large", "admin.too_large",
                                           "instance.not_running"), answer
    assert set(api.created) == before


# ---- the defects these properties found, one example each ------------------------------------

def test_a_tenant_that_is_no_tenant_of_the_project_is_refused_before_anything_is_written(api):
    """Was: any JSON value was taken as the tenant (201 for 5, [1], "../../etc", "nope"), and a
    5000-character one answered 500 after the instance was written."""
    before = set(api.created)
    for tenant in (5, [1], True, "../../etc", "a/b", "é", "x" * 5000):
        status, answer = api.call("regression", "POST", f"{API}/instances",
                                  encode({"tenant": tenant}))
        assert status == 400 and answer["error"]["code"] == "tenant.invalid", answer
    status, answer = api.call("regression", "POST", f"{API}/instances", encode({"tenant": "nope"}))
    assert status == 404 and answer["error"]["code"] == "tenant.not_found"
    assert "acme, globex" in answer["error"]["hint"]
    assert set(api.created) == before
    assert_consistent(api)


def test_json_nested_past_the_limit_is_a_400_not_a_500(api):
    """Was: a body nested past Python's recursion limit answered 500 (RecursionError)."""
    for path, body in (("/instances", {"tenant": "acme", "params": Deep(5000)}),
                       (f"/instances/{api.order}/events", {"type": "go", "payload": Deep(5000)}),
                       ("/playground", {"code": sample_code(), "params": Deep(5000)}),
                       ("/instances", {"tenant": "acme", "params": Deep(MAX_DEPTH)})):
        status, answer = api.call("regression", "POST", API + path, encode(body))
        assert status == 400 and "deeper than" in answer["error"]["message"], answer


def test_text_json_cannot_carry_is_refused(api):
    """Was: a lone surrogate ("\\ud800") in params was stored and the 201 answer then failed to
    encode (500, instance written); in playground code it failed the size check (500); and a
    5000-digit number answered 500 (ValueError, not JSONDecodeError)."""
    before = set(api.created)
    for path, raw in (("/instances", b'{"tenant": "acme", "params": {"x": "\\ud800"}}'),
                      (f"/instances/{api.order}/events", b'{"type": "go", "payload": "\\udfff"}'),
                      ("/playground", b'{"code": "\\ud800"}'),
                      ("/instances", b'{"tenant": "acme", "params": ' + b"1" * 5000 + b"}"),
                      ("/instances", b'{"tenant": "acme", "params": NaN}')):
        status, answer = api.call("regression", "POST", API + path, raw)
        assert status == 400 and answer["error"]["code"] == "admin.invalid", answer
    assert set(api.created) == before


def test_query_numbers_out_of_range_are_refused(api):
    """Was: ?after= beyond SQLite's integers answered 500 (OverflowError), and ?limit=-1 was
    quietly read as 1."""
    for path, text in ((f"/instances/{api.order}/logs", b"after=99999999999999999999"),
                       (f"/instances/{api.order}/logs", b"after=-1"),
                       ("/instances", b"limit=-1"), ("/instances", b"limit=0"),
                       ("/instances", b"limit=1_0")):
        status, answer = api.call("regression", "GET", API + path, query=text)
        assert status == 400 and "whole number" in answer["error"]["message"], answer
    status, answer = api.call("regression", "GET", f"{API}/instances/{api.order}/logs",
                              query=f"after={MAX_QUERY_NUMBER}".encode())
    assert status == 200 and answer["lines"] == []


def test_odd_guard_headers_are_refused_not_crashed(api):
    """Was: a token header with a non-ASCII byte answered 500 (compare_digest refuses non-ASCII
    text), and a Host or Origin urlsplit cannot read ("[::1") answered 500."""
    status, answer = api.call("regression", "POST", f"{API}/instances/{api.order}/wake",
                              token=False, headers={"x-dynwf-token": b"\xe9t\xe9"})
    assert status == 401 and answer["error"]["code"] == "admin.token"
    for name, value in (("host", b"[::1"), ("origin", b"http://[x]")):
        status, answer = api.call("regression", "GET", f"{API}/instances", headers={name: value})
        assert status == 403 and answer["error"]["code"] == "admin.forbidden"


def test_unknown_fields_and_empty_workflow_are_named(api):
    """Was: a misspelt field was ignored ({"param": ...} created an instance without params),
    and an empty 'workflow' ran the default one."""
    status, answer = api.call("regression", "POST", f"{API}/instances",
                              encode({"tenant": "acme", "param": {"items": []}}))
    assert status == 400 and "'param'" in answer["error"]["message"]
    status, answer = api.call("regression", "POST", f"{API}/instances",
                              encode({"tenant": "acme", "workflow": ""}))
    assert status == 400 and "'workflow'" in answer["error"]["message"]


def test_refused_playground_params_leave_no_scratch_code(api):
    """Was: the code was saved under <state dir>/playground/ before its params were refused."""
    code = sample_code() + "\n# refused params\n"
    status, answer = api.call("regression", "POST", f"{API}/playground",
                              encode({"code": code, "params": "x" * MAX_PAYLOAD}))
    assert status == 400 and answer["error"]["code"] == "payload.too_large"
    assert_consistent(api)


def test_the_database_is_consistent_after_shutdown(api):
    """Last: the engine hands its leases back and closes; the file is intact and holds exactly
    the instances answered 2xx."""
    api.client.close()
    assert_consistent(api)
    for name, counts in sorted(api.outcomes.items()):
        print(f"{name}: {sum(counts.values())} requests: {dict(sorted(counts.items()))}")


# ---- a real dynwf dev over raw HTTP -----------------------------------------------------------

@dataclass
class RawAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        return checked(self.status, self.body, "raw HTTP")


def exchange(port: int, data: bytes, *, hang_up: bool = False, listen: bool = True,
             timeout: float = 10) -> RawAnswer | None:
    """Send ``data`` in pieces (``listen``: stopping when the server answers early) and read the
    answer; ``hang_up``: close our side after sending. None when the server closed without
    answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for start in range(0, len(data), 64 * 1024):
            if listen and select.select([sock], [], [], 0)[0]:
                break                                       # answered before the body ended
            try:
                sock.sendall(data[start:start + 64 * 1024])
            except (BrokenPipeError, ConnectionResetError):
                break
        if hang_up:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    if not received:
        return None
    head, _, body = received.partition(b"\r\n\r\n")
    return RawAnswer(int(head.split(b" ", 2)[1]), body)


def http_request(method: str, path: str, body: bytes = b"", *, token: str | None = None,
                 headers: dict[str, bytes] | None = None, length: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    if token is not None:
        lines.append(b"x-dynwf-token: " + token.encode())
    if length is not None:
        lines.append(b"Content-Length: " + length)
    elif body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def wait_until_healthy(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 30) -> None:
    """Poll the health route until it says ok (the pause between polls also notices a server
    that died)."""
    url = f"http://127.0.0.1:{port}/__dynwf/health"
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if json.loads(response.read())["ok"]:
                return
        assert proc.poll() is None, "dynwf dev exited"
        assert time.monotonic() < deadline, "dynwf dev did not become healthy"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)


def test_raw_http_to_a_real_dev_server(tmp_path):
    """Truncated and over-long bodies, lying or unreadable Content-Length, a chunked body past
    the limit, bytes that are no JSON, odd headers: each is a 4xx (coded, when it reaches the
    app), the server logs no traceback, and the database holds only the 201."""
    project = copy_hello(tmp_path)
    port = free_port()
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "DYNWF_STATE_DIR"}
    with log.open("wb") as stderr:
        proc = subprocess.Popen([str(DYNWF), "dev", "--config", str(project / "wrangler.jsonc"),
                                 "--port", str(port), "--no-reload", "--json"],
                                stdout=subprocess.DEVNULL, stderr=stderr, cwd=project, env=env)
    try:
        wait_until_healthy(port, proc)
        token = (project / ".dynwf" / "admin-token").read_text().strip()
        create = f"{API}/instances"

        # the client hangs up halfway through its body: a 400 if it reads on, no traceback
        answer = exchange(port, http_request("POST", create, b'{"tenant": "ac', token=token,
                                             length=b"100"), hang_up=True)
        assert answer is None or answer.status == 400
        # Content-Length shorter than the body: the app reads what it was told
        answer = exchange(port, http_request("POST", create, b'{"tenant": "acme"}', token=token,
                                             length=b"5"))
        assert answer.status == 400 and answer.json()["error"]["code"] == "admin.invalid"
        # a body a little over the limit is read to its end, so a client that sends it all
        # before reading (as urllib does) gets the 413, not a reset connection
        answer = exchange(port, http_request("POST", create, b" " * (MAX_BODY + 1), token=token),
                          listen=False)
        assert answer.status == 413 and answer.json()["error"]["code"] == "admin.too_large"
        # a Content-Length far over the limit is refused at once, before any body is sent
        answer = exchange(port, http_request("POST", create, token=token, length=b"100000000"))
        assert answer.status == 413 and answer.json()["error"]["code"] == "admin.too_large"
        # a chunked body has no length: read to its end, then refused
        piece = b"x" * 65536
        chunked = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(40))
        answer = exchange(port, http_request("POST", create, chunked + b"0\r\n\r\n", token=token,
                                             headers={"Transfer-Encoding": b"chunked"}))
        assert answer.status == 413 and answer.json()["error"]["code"] == "admin.too_large"
        # an unreadable Content-Length never reaches the app: the HTTP layer's 400
        answer = exchange(port, http_request("POST", create, b"{}", token=token, length=b"abc"))
        assert answer.status == 400
        for body in (b"\x00\x01\x02", b"{", b"\xff" * 64, b'{"tenant": "acme", "params": NaN}',
                     b'{"tenant": ["acme"]}', b"[]" * 1000, b"[" * 100_000):
            answer = exchange(port, http_request("POST", create, body, token=token))
            assert answer.status == 400, answer
            answer.json()
        answer = exchange(port, http_request("POST", f"{API}/instances/order-1/wake",
                                             token="t\xe9"))
        assert answer.status == 401 and answer.json()["error"]["code"] == "admin.token"
        answer = exchange(port, http_request("GET", create, headers={"Origin": b"http://[x]"}))
        assert answer.status == 403 and answer.json()["error"]["code"] == "admin.forbidden"
        answer = exchange(port, http_request("POST", create, b'{"tenant": "acme", "id": "r-1"}',
                                             token=token))
        assert answer.status == 201, answer
        created = answer.json()["id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise
    assert code == 0
    logged = log.read_text(errors="replace")
    assert "Traceback" not in logged and "Exception in ASGI application" not in logged, logged
    with contextlib.closing(sqlite3.connect(project / ".dynwf" / "state.sqlite")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert [row[0] for row in conn.execute("SELECT id FROM instances")] == [created]
