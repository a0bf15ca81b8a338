"""Acme's job: convert a few thousand orders to US dollars and total the revenue by country.

The upload is processed in batches of 500 rows, one step per batch, in order. A batch step
reads its rows through ``FILES``, writes its converted rows as a part file and returns only
totals, so what the engine persists per batch is small, and progress survives a restart: a job
that is stopped resumes at the first batch that has not finished.

``"flaky_batch": N`` in the params makes batch N's first attempt fail, as a call to a rate
service that times out would; the batch's retry policy runs it again.
"""

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

BATCH_ROWS = 500
# Fixed rates for the run, in US cents per unit of each currency.
CENTS_PER_UNIT = {"USD": 100, "EUR": 108, "GBP": 127, "JPY": 0.67}
BATCH_POLICY = {"retries": {"limit": 3, "delay": "10 seconds", "backoff": "linear"},
                "timeout": "2 minutes"}


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        files = self.env.FILES
        job = event["instanceId"]
        params = event["payload"]
        upload = params.get("file", "orders.csv")

        @step.do()
        async def plan_batches():
            total = await files.count_rows(upload)
            size = int(params.get("batch_rows", BATCH_ROWS))
            return {"total": total, "batches": [[offset, min(size, total - offset)]
                                                for offset in range(0, total, size)]}

        plan = await plan_batches()
        revenue, skipped = {}, 0
        for index, (offset, limit) in enumerate(plan["batches"]):
            @step.do("convert batch", config=BATCH_POLICY)
            async def convert_batch(ctx):
                if index == params.get("flaky_batch") and ctx["attempt"] == 1:
                    raise ConnectionError(f"rate service timed out during batch {index}")
                rows = await files.read_rows(upload, offset, limit)
                converted, totals, cancelled = [], {}, 0
                for row in rows:
                    if row["status"] == "cancelled":
                        cancelled += 1
                        continue
                    cents = round(float(row["unit_price"]) * int(row["quantity"])
                                  * CENTS_PER_UNIT[row["currency"]])
                    converted.append({"order_id": row["order_id"], "date": row["date"],
                                      "country": row["country"], "total_usd_cents": cents})
                    totals[row["country"]] = totals.get(row["country"], 0) + cents
                await files.write_part(job, index, converted)
                return {"batch": index, "rows": len(converted), "cancelled": cancelled,
                        "revenue": totals, "progress": f"{offset + limit}/{plan['total']}",
                        "attempt": ctx["attempt"]}

            result = await convert_batch()
            skipped += result["cancelled"]
            for country, cents in result["revenue"].items():
                revenue[country] = revenue.get(country, 0) + cents

        @step.do("merge results")
        async def merge_results():
            return await files.merge_parts(job, "orders-usd.csv", len(plan["batches"]))

        merged = await merge_results()
        summary = {"job": job, "rows_in": plan["total"], "rows_out": merged["rows"],
                   "cancelled": skipped, "batches": len(plan["batches"]),
                   "revenue_usd": {c: round(v / 100, 2) for c, v in sorted(revenue.items())},
                   "result": merged["file"]}

        @step.do("write report")
        async def write_report():
            return await files.write_report(job, "report.json", summary)

        await write_report()
        return summary


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.method == "GET":
            job = request.url.partition("job=")[2]
            instance = await self.env.WORKFLOWS.get(job)
            return Response.json(await instance.status())
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
