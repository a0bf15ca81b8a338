"""Acme's onboarding sequence: welcome a new user, wait a day, nudge them, then branch.

The branch is decided by the result of an earlier step: a user who has already created a project
is offered an upgrade; one who has not is offered a call with a person. What a step returned is
persisted, so after the one-day sleep (and after any restart) ``run()`` replays to the same branch.

``POST {"email": "ada@example.com", "projects_created": 2}`` with ``x-tenant-id: acme`` starts one.
``projects_created`` stands in for a lookup in the product's database.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        user = event["payload"]
        email = user.get("email", "new.user@example.com")
        first_name = email.split("@")[0].split(".")[0].capitalize()

        @step.do()              # a step named after its function: "send_welcome"
        async def send_welcome():
            # A mail provider would refuse an address it cannot deliver to.
            delivered = not email.endswith("@bounce.example")
            return {"to": email, "template": "welcome", "delivered": delivered,
                    "subject": f"Welcome to Acme, {first_name}!"}

        welcome = await send_welcome()

        # A durable sleep: no process holds this instance for the day.
        await step.sleep("wait a day", "1 day")

        @step.do()
        async def check_usage():
            projects = int(user.get("projects_created", 0))
            return {"projects": projects, "active": projects > 0}

        # Its parameters are filled with the results of the steps of the same names.
        @step.do("nudge")
        async def nudge(send_welcome, check_usage):
            channel = "email" if send_welcome["delivered"] else "sms"
            if check_usage["active"]:
                text = f"{first_name}, nice work on your first project! Here are three tips."
            else:
                text = f"{first_name}, your workspace is ready: start a project in 2 minutes."
            return {"channel": channel, "text": text}

        usage = await check_usage()
        reminder = await nudge()

        if usage["active"]:
            @step.do("offer upgrade")
            async def offer_upgrade():
                return {"offer": "pro-trial-14-days", "to": email}

            outcome = {"path": "upgrade", **await offer_upgrade()}
        else:
            @step.do("book onboarding call")
            async def book_onboarding_call():
                return {"offer": "onboarding-call", "owner": "customer-success", "to": email}

            outcome = {"path": "call", **await book_onboarding_call()}

        return {"welcome_delivered": welcome["delivered"], "nudge": reminder, **outcome}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
