"""Globex's job: clean a contact list before it is imported into their CRM.

Every address is trimmed and lower-cased; rows whose address is still not an address are
rejected with a reason; names are reduced to first name and initial, since the CRM import must
not carry full names. The batches are independent, so they run in parallel: all the batch
steps are started together with ``asyncio.gather``, and each persists on its own.
"""

import asyncio
import re

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

BATCH_ROWS = 400
EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$")


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        files = self.env.FILES
        job = event["instanceId"]
        upload = event["payload"].get("file", "contacts.csv")

        @step.do()
        async def plan_batches():
            total = await files.count_rows(upload)
            return {"total": total, "batches": [[offset, min(BATCH_ROWS, total - offset)]
                                                for offset in range(0, total, BATCH_ROWS)]}

        plan = await plan_batches()

        def clean(index, offset, limit):
            @step.do("clean batch", config={"retries": {"limit": 2, "delay": "5 seconds",
                                                        "backoff": "constant"}})
            async def clean_batch():
                kept, rejected, fixed, domains = [], [], 0, {}
                for row in await files.read_rows(upload, offset, limit):
                    email = row["email"].strip().lower()
                    fixed += email != row["email"]
                    if not EMAIL.match(email):
                        rejected.append({"row": str(offset + len(kept) + len(rejected) + 2),
                                         "email": row["email"].strip(),
                                         "reason": "not an email address"})
                        continue
                    first, _, last = row["name"].partition(" ")
                    domain = email.split("@")[1]
                    domains[domain] = domains.get(domain, 0) + 1
                    kept.append({"name": f"{first} {last[:1]}.", "email": email,
                                 "company": row["company"], "signed_up": row["signed_up"]})
                await files.write_part(job, index, kept)
                return {"batch": index, "kept": len(kept), "fixed": fixed, "domains": domains,
                        "rejected": rejected}

            return clean_batch()

        results = await asyncio.gather(*(clean(index, offset, limit)
                                         for index, (offset, limit) in enumerate(plan["batches"])))

        @step.do("merge results")
        async def merge_results():
            return await files.merge_parts(job, "contacts-clean.csv", len(plan["batches"]))

        merged = await merge_results()
        domains = {}
        for result in results:
            for domain, n in result["domains"].items():
                domains[domain] = domains.get(domain, 0) + n
        rejected = [r for result in results for r in result["rejected"]]
        summary = {"job": job, "rows_in": plan["total"], "kept": merged["rows"],
                   "fixed": sum(r["fixed"] for r in results), "rejected": len(rejected),
                   "batches": len(results), "domains": dict(sorted(domains.items())),
                   "result": merged["file"]}

        @step.do("write report")
        async def write_report():
            return await files.write_report(job, "rejected.json", {**summary, "rows": rejected})

        await write_report()
        return summary


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.method == "GET":
            instance = await self.env.WORKFLOWS.get(request.url.partition("job=")[2])
            return Response.json(await instance.status())
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
