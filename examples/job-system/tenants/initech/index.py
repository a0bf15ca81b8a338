"""Initech's job: convert sensor readings to Fahrenheit and flag the anomalous ones.

Two passes, the second depending on the first: a ``profile`` step computes each sensor's mean
and spread over the whole upload, then each batch step receives that profile (a parameter named
after the step) and flags readings more than 3.5 standard deviations from their sensor's mean.
"""

import statistics

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

BATCH_ROWS = 600
THRESHOLD = 3.5


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        files = self.env.FILES
        job = event["instanceId"]
        upload = event["payload"].get("file", "readings.csv")

        @step.do()
        async def profile():
            total = await files.count_rows(upload)
            values = {}
            for offset in range(0, total, BATCH_ROWS):
                for row in await files.read_rows(upload, offset, BATCH_ROWS):
                    values.setdefault(row["sensor"], []).append(float(row["celsius"]))
            return {"total": total, "sensors": {
                sensor: {"mean": statistics.fmean(v), "stdev": statistics.stdev(v), "n": len(v)}
                for sensor, v in sorted(values.items())}}

        stats = await profile()
        flagged = []
        batches = range(0, stats["total"], BATCH_ROWS)
        for index, offset in enumerate(batches):
            @step.do("flag batch")
            async def flag_batch(profile):
                out, anomalies = [], []
                for row in await files.read_rows(upload, offset, BATCH_ROWS):
                    sensor = profile["sensors"][row["sensor"]]
                    celsius = float(row["celsius"])
                    z = (celsius - sensor["mean"]) / sensor["stdev"]
                    anomalous = abs(z) > THRESHOLD
                    out.append({"sensor": row["sensor"], "at": row["at"],
                                "fahrenheit": f"{celsius * 9 / 5 + 32:.2f}",
                                "anomaly": "yes" if anomalous else ""})
                    if anomalous:
                        anomalies.append({"sensor": row["sensor"], "at": row["at"],
                                          "celsius": celsius, "z": round(z, 1)})
                await files.write_part(job, index, out)
                return {"batch": index, "rows": len(out), "anomalies": anomalies}

            flagged += (await flag_batch())["anomalies"]

        @step.do("merge results")
        async def merge_results():
            return await files.merge_parts(job, "readings-f.csv", len(batches))

        merged = await merge_results()
        by_sensor = {}
        for anomaly in flagged:
            by_sensor[anomaly["sensor"]] = by_sensor.get(anomaly["sensor"], 0) + 1
        return {"job": job, "rows_in": stats["total"], "rows_out": merged["rows"],
                "batches": len(batches), "anomalies": len(flagged),
                "anomalies_by_sensor": dict(sorted(by_sensor.items())),
                "first_anomaly": flagged[0] if flagged else None, "result": merged["file"]}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.method == "GET":
            instance = await self.env.WORKFLOWS.get(request.url.partition("job=")[2])
            return Response.json(await instance.status())
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
