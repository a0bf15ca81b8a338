"""``workers``: Request, Response and Headers as Python Workers code sees them (docs/semantics.md §3.7), and
their trip across the isolate boundary by value."""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any

import pytest

from emulator.rpc import codec
from emulator.rpc.target import RpcTarget, is_value_type
from emulator.runtime.workers import (Headers, Request, Response, WorkerEntrypoint,
                                      WorkflowEntrypoint)


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def over_the_wire(value: Any) -> Any:
    """Encode as the RPC does, through real JSON text, and decode on the other side."""
    return codec.decode(json.loads(json.dumps(codec.encode(value, None))), None)  # type: ignore[arg-type]


# ---- headers ----------------------------------------------------------------------------------

def test_header_names_are_case_insensitive() -> None:
    headers = Headers({"Content-Type": "application/json", "X-Tenant-Id": "acme"})
    assert headers.get("x-tenant-id") == "acme"
    assert headers["CONTENT-TYPE"] == "application/json"
    assert "X-TENANT-ID" in headers and "missing" not in headers
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        headers["missing"]
    assert list(headers) == ["content-type", "x-tenant-id"]
    assert headers.items() == [("content-type", "application/json"), ("x-tenant-id", "acme")]


def test_headers_append_joins_and_set_replaces() -> None:
    headers = Headers([("Accept", "text/html"), ("accept", "application/json")])
    assert headers["accept"] == "text/html, application/json"
    headers.set("Accept", "*/*")
    headers.delete("ACCEPT")
    assert len(headers) == 0


def test_headers_refuse_invalid_names_and_values() -> None:
    with pytest.raises(TypeError, match="header name"):
        Headers({"bad name": "x"})
    with pytest.raises(TypeError, match="header value"):
        Headers({"x-ok": "split\r\nInjected: 1"})


# ---- request ----------------------------------------------------------------------------------

def test_request_fields_and_body_readers() -> None:
    request = Request("https://example.com/run?x=1", method="post",
                      headers={"X-Tenant-Id": "acme"}, body='{"name": "Ada"}')
    assert request.url == "https://example.com/run?x=1"
    assert request.method == http.HTTPMethod.POST and request.method == "POST"
    assert request.headers.get("x-tenant-id") == "acme"
    assert arun(request.clone().json()) == {"name": "Ada"}
    assert arun(request.clone().text()) == '{"name": "Ada"}'
    assert arun(request.bytes()) == b'{"name": "Ada"}'


def test_a_body_is_read_once_and_clone_reads_it_again() -> None:
    request = Request("https://example.com/", method="PUT", body=b"payload")
    copy = request.clone()
    assert arun(request.text()) == "payload"
    assert request.body_used
    with pytest.raises(TypeError, match="Body has already been used"):
        arun(request.text())
    with pytest.raises(TypeError, match="Body has already been used"):
        request.clone()
    assert arun(copy.bytes()) == b"payload"


def test_get_and_head_requests_cannot_have_a_body() -> None:
    with pytest.raises(TypeError, match="GET/HEAD"):
        Request("https://example.com/", body="x")
    assert Request("https://example.com/").method == http.HTTPMethod.GET
    assert arun(Request("https://example.com/").bytes()) == b""


def test_request_refuses_bodies_that_are_not_text_or_bytes() -> None:
    with pytest.raises(TypeError, match="dict"):
        Request("https://example.com/", method="POST", body={"a": 1})


# ---- response ---------------------------------------------------------------------------------

def test_response_defaults_and_text_body() -> None:
    response = Response("hello")
    assert (response.status, response.status_text, response.body) == (200, "", b"hello")
    assert response.ok
    assert response.headers["content-type"] == "text/plain;charset=UTF-8"
    assert arun(response.text()) == "hello"
    empty = Response(status=None)
    assert (empty.status, empty.body) == (200, b"")
    assert "content-type" not in empty.headers


def test_response_json_builds_on_the_class_and_parses_on_an_instance() -> None:
    response = Response.json({"id": "order-1", "n": [1, 2]}, status=201, headers={"X-A": "b"})
    assert response.status == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-a"] == "b"
    assert json.loads(response.body) == {"id": "order-1", "n": [1, 2]}
    assert arun(response.json()) == {"id": "order-1", "n": [1, 2]}
    assert Response.from_json([1]).body == b"[1]"
    kept = Response.json({}, headers={"content-type": "application/vnd.api+json"})
    assert kept.headers["content-type"] == "application/vnd.api+json"


def test_response_redirect() -> None:
    response = Response.redirect("https://example.com/next")
    assert response.status == 302
    assert response.headers["location"] == "https://example.com/next"
    assert Response.redirect("/x", 301).status == 301
    with pytest.raises(ValueError, match="301, 302, 303, 307, 308"):
        Response.redirect("/x", 200)


def test_response_status_rules() -> None:
    with pytest.raises(ValueError, match="200 to 599"):
        Response("x", status=99)
    with pytest.raises(TypeError, match="null body status"):
        Response("x", status=204)
    assert Response(None, status=204).body == b""
    assert not Response("x", status=404).ok


def test_response_refuses_a_dict_body_and_points_to_json() -> None:
    with pytest.raises(TypeError, match=r"Response\.json"):
        Response({"a": 1})


# ---- crossing the isolate boundary ------------------------------------------------------------

def test_request_and_response_are_rpc_value_types() -> None:
    assert is_value_type(Request("https://example.com/"))
    assert is_value_type(Response())


def test_request_round_trips_over_rpc() -> None:
    request = Request("https://example.com/a", method="POST",
                      headers={"X-Tenant-Id": "acme"}, body=b"\x00\xffraw")
    back = over_the_wire(request)
    assert isinstance(back, Request) and back is not request
    assert (back.url, back.method, back.headers.items()) == \
        ("https://example.com/a", http.HTTPMethod.POST, [("x-tenant-id", "acme")])
    assert arun(back.bytes()) == b"\x00\xffraw"
    assert Request.from_rpc(request.to_rpc()).body == b"\x00\xffraw"


def test_response_round_trips_over_rpc() -> None:
    response = Response.json({"ok": True}, status=202, status_text="Accepted")
    back = over_the_wire(response)
    assert isinstance(back, Response)
    assert (back.status, back.status_text) == (202, "Accepted")
    assert back.headers == {"content-type": "application/json"}
    assert arun(back.json()) == {"ok": True}
    bodiless = over_the_wire(Response(None, status=204))
    assert (bodiless.status, bodiless.body) == (204, b"")


def test_a_used_body_cannot_be_sent() -> None:
    response = Response("once")
    arun(response.text())
    with pytest.raises(TypeError, match="Body has already been used"):
        response.to_rpc()


# ---- entrypoints ------------------------------------------------------------------------------

def test_entrypoints_store_ctx_and_env_and_worker_entrypoints_pass_by_reference() -> None:
    ctx, env = object(), {"WORKFLOWS": object()}
    worker = WorkerEntrypoint(ctx, env)
    workflow = WorkflowEntrypoint(ctx, env)
    assert (worker.ctx, worker.env, workflow.ctx, workflow.env) == (ctx, env, ctx, env)
    assert isinstance(worker, RpcTarget)
    with pytest.raises(NotImplementedError, match="run"):
        arun(workflow.run({}, None))
