"""Acme's order workflow: reserve stock, price the order, wait for payment, then ship.

Steps declared with ``@step.do()`` are named after their function, and a later step receives an
earlier step's result through a parameter of the same name (``quote(reserve_stock)``).
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint
from workers.workflows import NonRetryableError


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        items = event["payload"].get("items", [])

        @step.do()
        async def reserve_stock():
            if not items:
                raise NonRetryableError("an order needs at least one item")
            return {"items": items, "units": sum(item.get("quantity", 1) for item in items)}

        @step.do(config={"retries": {"limit": 3, "delay": "5 seconds", "backoff": "exponential"},
                         "timeout": "1 minute"})
        async def quote(reserve_stock):
            total = sum(item.get("price", 0) * item.get("quantity", 1)
                        for item in reserve_stock["items"])
            return {"total": round(total, 2), "units": reserve_stock["units"]}

        price = await quote()
        payment = await step.wait_for_event("payment", "payment-received", timeout="1 hour")
        await step.sleep("packing", "10 seconds")

        @step.do("ship")
        async def ship(ctx):
            return {"carrier": "acme-post", "attempt": ctx["attempt"]}

        shipment = await ship()
        return {"total": price["total"], "units": price["units"], "paid": payment["payload"],
                "shipment": shipment}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
