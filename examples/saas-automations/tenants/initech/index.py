"""Initech's billing run: charge an invoice, retrying a flaky gateway with exponential back-off.

The ``charge card`` step has its own retry policy: up to 4 retries, 30 seconds after the first
failure, then 60, 120, 240 (``dynwf run`` skips the waits). A declined card is not worth
retrying: the step raises ``NonRetryableError``, which ends its retries at once and comes back
into ``run()``, where it is caught and the failure is recorded; the instance still completes.

``POST {"invoice": "INV-1001", "amount_cents": 4900, "card": "tok_flaky"}`` with
``x-tenant-id: initech`` starts one; the test cards are described in ``gateway.py``.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint
from workers.workflows import NonRetryableError

import gateway

CHARGE_POLICY = {"retries": {"limit": 4, "delay": "30 seconds", "backoff": "exponential"},
                 "timeout": "30 seconds"}


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        params = event["payload"]

        @step.do()              # named after its function: "create_invoice"
        async def create_invoice():
            return {"invoice": params.get("invoice", "INV-0001"),
                    "amount_cents": int(params.get("amount_cents", 4900)),
                    "card": params.get("card", "tok_flaky")}

        @step.do("charge card", config=CHARGE_POLICY)
        async def charge_card(create_invoice, ctx):
            try:
                result = gateway.charge(create_invoice["card"], create_invoice["invoice"],
                                        create_invoice["amount_cents"], ctx["attempt"])
            except gateway.CardDeclined as exc:
                raise NonRetryableError(str(exc)) from None
            # GatewayUnavailable propagates: a failed attempt, retried under CHARGE_POLICY.
            return {**result, "attempts": ctx["attempt"]}

        invoice = await create_invoice()
        try:
            charge = await charge_card()
        except NonRetryableError as exc:
            reason = str(exc)

            @step.do("record failure")
            async def record_failure():
                return {"invoice": invoice["invoice"], "dunning": "email the customer to "
                        "update their card", "reason": reason}

            return {"status": "payment_failed", **await record_failure()}

        @step.do("send receipt")
        async def send_receipt():
            return {"to": params.get("email", "billing@initech.example"),
                    "charge_id": charge["charge_id"]}

        receipt = await send_receipt()
        return {"status": "paid", "invoice": invoice["invoice"], "charge": charge,
                "receipt_to": receipt["to"]}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
