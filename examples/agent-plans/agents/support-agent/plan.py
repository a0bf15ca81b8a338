# Plan written by the support agent for its task (task.md). Every tool call is a durable step;
# send_email is dangerous, so the run waits for a human to approve it first.

from workers import WorkflowEntrypoint

from agent_tools import NotApproved, Tools


class Plan(WorkflowEntrypoint):
    async def run(self, event, step):
        ticket = event["payload"]
        tools = Tools(step, self.env.TOOLS)
        customer = ticket.get("customer", "dana@customer.example")
        days = int(ticket.get("days_since_purchase", 20))
        price = float(ticket.get("annual_price", 1200))

        policy = await tools.call("search_notes", query="refund annual plan days", limit=2)

        @step.do("work out refund")
        async def work_out_refund():
            if days <= 30:
                return {"amount": price, "rule": "full refund within 30 days"}
            unused_months = max(0, 12 - (days + 29) // 30)
            return {"amount": round(price * unused_months / 12 * 0.9, 2),
                    "rule": f"pro rata for {unused_months} unused months, minus 10%"}

        refund = await work_out_refund()
        reply = (f"Hi, you bought the annual plan {days} days ago, so you are owed "
                 f"${refund['amount']:.2f} ({refund['rule']}). It will reach your original "
                 "payment method within 5 to 10 business days.")
        try:
            sent = await tools.call("send_email", to=customer, subject="Your refund", body=reply)
        except NotApproved as exc:
            return {"ticket": ticket.get("id", "T-1042"), "refund": refund, "sent": False,
                    "why": str(exc)}
        return {"ticket": ticket.get("id", "T-1042"), "refund": refund, "sent": True,
                "email": sent["id"], "policy": sorted({hit["note"] for hit in policy})}
