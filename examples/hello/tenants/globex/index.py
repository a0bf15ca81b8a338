"""Globex's sign-up workflow: open an account, give the user two days to confirm their email,
then activate the account either way (a confirmation that never came is caught, not fatal).

``POST {"email": ...}`` starts an instance; ``POST {"confirm": "<instance id>"}`` sends the
confirmation event to it.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        email = event["payload"].get("email", "someone@example.com")

        @step.do("open account")
        async def open_account():
            return {"account": email.split("@")[0], "plan": event["payload"].get("plan", "free")}

        account = await open_account()
        await step.sleep("grace period", "5 seconds")
        try:
            confirmation = await step.wait_for_event("confirm email", "email-confirmed",
                                                     timeout="2 days")
        except Exception:       # the wait timed out: activate anyway, as unconfirmed
            confirmation = None

        @step.do("activate", config={"retries": {"limit": 2, "delay": "1 second",
                                                 "backoff": "constant"}})
        async def activate():
            return {**account, "active": True, "confirmed": confirmation is not None}

        return await activate()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        if "confirm" in body:
            instance = await self.env.WORKFLOWS.get(body["confirm"])
            await instance.send_event({"type": "email-confirmed", "payload": {"email": True}})
            return Response.json({"id": instance.id, "confirmed": True})
        instance = await self.env.WORKFLOWS.create({"params": body})
        return Response.json({"id": instance.id})
