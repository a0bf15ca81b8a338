"""A tenant's workflow: each step's result is saved, so a replay skips what already ran."""

from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        name = event["payload"].get("name", "world")
        items = event["payload"].get("items", [])

        @step.do("greet")
        async def greet():
            print(f"greeting {name}")
            return f"Hello, {name}!"

        @step.do("add up", config={"retries": {"limit": 2, "delay": "1 second",
                                               "backoff": "constant"}})
        async def add_up():
            total = sum(items)
            print(f"{len(items)} items, total {total}")
            return total

        greeting = await greet()
        total = await add_up()
        await step.sleep("short nap", "1 second")
        approval = await step.wait_for_event("approval", "approved", timeout="1 hour")

        @step.do("finish")
        async def finish():
            print("approved by", approval["payload"].get("by", "someone"))
            return {"greeting": greeting, "total": total,
                    "approved_by": approval["payload"].get("by")}

        return await finish()
