"""Globex's purchase approval chain: a manager approves, then (above a limit) finance approves.

Each approval is a ``wait_for_event`` with a timeout. An approval that does not arrive in time
raises into ``run()``, which catches it and escalates to a director instead of failing.

``POST {"item": "laptop", "amount": 2400}`` with ``x-tenant-id: globex`` starts a request;
``POST {"decide": "<id>", "level": "manager", "approved": true}`` records a decision. The
timeouts can be shortened for a demo with ``"manager_timeout"`` / ``"finance_timeout"``
(e.g. ``"5 seconds"``).
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

FINANCE_LIMIT = 1000      # requests above this amount also need finance's approval


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        request = event["payload"]
        manager_timeout = request.get("manager_timeout", "2 days")
        finance_timeout = request.get("finance_timeout", "1 day")

        @step.do("open request")
        async def open_request():
            amount = request.get("amount", 0)
            return {"item": request.get("item", "unspecified"), "amount": amount,
                    "requester": request.get("requester", "someone@globex.example"),
                    "needs_finance": amount > FINANCE_LIMIT}

        ticket = await open_request()
        decisions = {}

        async def escalate(level, waited, error):
            @step.do("escalate")
            async def notify_director():
                return {"to": "director@globex.example", "level": level,
                        "reason": f"no {level} decision within {waited}"}

            return {"status": "escalated", "decisions": decisions, "timeout": error,
                    "escalation": await notify_director(), **ticket}

        try:
            manager = await step.wait_for_event("manager approval", "manager-approval",
                                                timeout=manager_timeout)
        except Exception as exc:     # the wait timed out
            return await escalate("manager", manager_timeout, type(exc).__name__)
        decisions["manager"] = bool(manager["payload"].get("approved"))
        if not decisions["manager"]:
            return {"status": "rejected", "by": "manager", "decisions": decisions, **ticket}

        if ticket["needs_finance"]:
            try:
                finance = await step.wait_for_event("finance approval", "finance-approval",
                                                    timeout=finance_timeout)
            except Exception as exc:
                return await escalate("finance", finance_timeout, type(exc).__name__)
            decisions["finance"] = bool(finance["payload"].get("approved"))
            if not decisions["finance"]:
                return {"status": "rejected", "by": "finance", "decisions": decisions, **ticket}

        @step.do("place order")
        async def place_order():
            return {"purchase_order": f"PO-{ticket['item']}-{ticket['amount']}"}

        return {"status": "approved", "decisions": decisions, **await place_order(), **ticket}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        if "decide" in body:
            instance = await self.env.WORKFLOWS.get(body["decide"])
            level = body.get("level", "manager")
            await instance.send_event({"type": f"{level}-approval",
                                       "payload": {"approved": bool(body.get("approved"))}})
            return Response.json({"id": instance.id, "level": level})
        instance = await self.env.WORKFLOWS.create({"params": body})
        return Response.json({"id": instance.id})
