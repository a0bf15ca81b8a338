# Plan written by the ops agent for its task (task.md): read metrics, follow the runbook, scale
# if the runbook says so (a dangerous tool: a human approves it first), then report.

import asyncio

from workers import WorkflowEntrypoint

from agent_tools import Tools


class Plan(WorkflowEntrypoint):
    async def run(self, event, step):
        service = event["payload"].get("service", "checkout")
        tools = Tools(step, self.env.TOOLS)

        # Two independent reads at once: each is its own durable step.
        metrics, downstream = await asyncio.gather(
            tools.call("read_metrics", service=service),
            tools.call("read_metrics", service="payments"))
        runbook = await tools.call("search_notes", query=f"{service} latency runbook scale")

        over_slo = metrics["p95_ms"] > metrics["slo_p95_ms"]
        saturated = metrics["cpu"] > 0.8
        action = None
        if over_slo and saturated:
            action = await tools.call("scale_service", service=service,
                                      replicas=metrics["replicas"] + 2)
        diagnosis = ("short of capacity" if over_slo and saturated else
                     "slow downstream" if over_slo else "within its SLO")
        lines = [f"- {service}: p95 {metrics['p95_ms']} ms (SLO {metrics['slo_p95_ms']} ms), "
                 f"CPU {metrics['cpu']:.0%}, {metrics['replicas']} replicas: {diagnosis}.",
                 f"- payments: p95 {downstream['p95_ms']} ms (SLO {downstream['slo_p95_ms']} ms).",
                 f"- runbook: {runbook[0]['text'] if runbook else 'none found'}",
                 f"- change: {'scaled to %d replicas' % action['to'] if action else 'none'}.",
                 "- watch: p95 for the next 15 minutes."]
        report = await tools.call("write_report", title=f"{service} latency incident",
                                  text="\n".join(lines))
        return {"service": service, "diagnosis": diagnosis,
                "scaled": {"from": action["from"], "to": action["to"]} if action else None,
                "report": report["file"]}
