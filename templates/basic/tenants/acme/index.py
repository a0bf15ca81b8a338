"""Acme's welcome workflow: greet a new user, wait a day, then follow up.

Start one with ``dynwf run --tenant acme --params '{"name": "Alice"}'`` (the emulator's virtual
clock skips the day), or with ``POST {"name": "Bob"}`` and ``x-tenant-id: acme`` to ``dynwf dev``.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        # run() is replayed from the top after every sleep, wait and crash; a finished step returns
        # its saved result instead of running again, so code outside steps must be deterministic.
        name = event["payload"].get("name", "world")

        @step.do("greet")
        async def greet():
            return f"Hello, {name}!"

        greeting = await greet()

        # A durable sleep: the instance holds no process or memory while it waits, and a restart
        # of the engine does not lose it.
        await step.sleep("wait a day", "1 day")

        # A parameter named after an earlier step receives that step's saved result.
        @step.do("follow up")
        async def follow_up(greet):
            return f"{greet} How was your first day?"

        return {"greeting": greeting, "follow_up": await follow_up()}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        # WORKFLOWS is wrapped with this tenant's id by the dispatcher: the instance created here
        # runs the TenantWorkflow above, and this tenant can reach no other tenant's instances.
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
