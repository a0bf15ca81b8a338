"""``agent_tools``: how a plan calls tools. The dispatcher adds this module to every plan.

    tools = Tools(step, self.env.TOOLS)
    notes = await tools.call("search_notes", query="refund annual plan")

Each call is one durable step named ``tool <name>``: its result is persisted, so a replay (after
a sleep, an approval or a restart) returns it without calling the tool again. Before a tool the
catalog marks dangerous, the call waits for a human: ``wait_for_event("approve <name>",
"human-approval")``, with a payload ``{"approved": true|false, "by": ...}``. A refusal, or no
answer within the timeout, raises :class:`NotApproved` into the plan, which may catch it.
"""

import asyncio

APPROVAL_TIMEOUT = "7 days"
TOOL_RETRIES = {"retries": {"limit": 2, "delay": "5 seconds", "backoff": "exponential"},
                "timeout": "1 minute"}


class NotApproved(Exception):
    """A human declined a dangerous tool call, or did not answer in time."""


class Tools:
    def __init__(self, step, toolbox):
        self._step = step
        self._toolbox = toolbox
        self._catalog = None
        self._lock = asyncio.Lock()

    async def catalog(self):
        """``{name: {"dangerous": bool, "about": str}}``, read once per run as a step."""
        async with self._lock:
            if self._catalog is None:
                @self._step.do("list tools")
                async def list_tools():
                    return await self._toolbox.catalog()

                self._catalog = await list_tools()
        return self._catalog

    async def call(self, name, **args):
        catalog = await self.catalog()
        if name not in catalog:
            raise LookupError(f"no tool {name!r} (tools: {', '.join(sorted(catalog))})")
        approval = None
        if catalog[name]["dangerous"]:
            try:
                event = await self._step.wait_for_event(f"approve {name}", "human-approval",
                                                        timeout=APPROVAL_TIMEOUT)
            except Exception as exc:
                raise NotApproved(f"nobody approved {name} within {APPROVAL_TIMEOUT}") from exc
            approval = event["payload"] or {}
            if approval.get("approved") is not True:
                raise NotApproved(f"{approval.get('by', 'a human')} declined {name}")

        @self._step.do(f"tool {name}", config=TOOL_RETRIES)
        async def call_tool():
            return await self._toolbox.call(name, args, approval)

        return await call_tool()
