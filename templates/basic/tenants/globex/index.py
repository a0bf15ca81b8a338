"""Globex's deploy workflow: build a release, wait up to an hour for approval, then deploy it.

Run it approved with ``dynwf run --tenant globex --event 'deploy-approval={"ok": true}'``.
Over HTTP, ``POST {"ref": "v1"}`` starts an instance and ``POST {"approve": "<instance id>"}``
approves it.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        ref = event["payload"].get("ref", "main")

        # A failed attempt is retried with backoff: 10 s, then 20 s, then the error reaches run().
        @step.do("build", config={"retries": {"limit": 2, "delay": "10 seconds",
                                              "backoff": "exponential"},
                                  "timeout": "5 minutes"})
        async def build():
            return {"ref": ref, "artifact": f"release-{ref}.tar.gz"}

        release = await build()
        try:
            approval = await step.wait_for_event("approval", "deploy-approval", timeout="1 hour")
        except Exception:
            # The hour passed with no approval. Catching the timeout ends the run cleanly; left
            # uncaught, it would end the instance as errored.
            return {"deployed": False, "reason": "not approved within 1 hour", **release}

        if not approval["payload"].get("ok"):
            return {"deployed": False, "reason": "rejected", **release}

        @step.do("deploy")
        async def deploy():
            return {"deployed": True, **release}

        return await deploy()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        if "approve" in body:
            instance = await self.env.WORKFLOWS.get(body["approve"])
            await instance.send_event({"type": "deploy-approval", "payload": {"ok": True}})
            return Response.json({"id": instance.id, "approved": True})
        instance = await self.env.WORKFLOWS.create({"params": body})
        return Response.json({"id": instance.id})
