# Plan written by the research agent for its task (task.md): three searches at once, then a
# report. It uses no dangerous tool, so it runs to the end without waiting for anyone.

import asyncio

from workers import WorkflowEntrypoint

from agent_tools import Tools

QUESTIONS = ["when to retry errors back-off", "idempotency key retry safe",
             "durable workflow retried steps"]


class Plan(WorkflowEntrypoint):
    async def run(self, event, step):
        tools = Tools(step, self.env.TOOLS)
        found = await asyncio.gather(*(tools.call("search_notes", query=q, limit=1)
                                       for q in QUESTIONS))

        @step.do("summarise")
        async def summarise():
            seen, bullets = set(), []
            for question, hits in zip(QUESTIONS, found):
                for hit in hits:
                    if hit["text"] not in seen:
                        seen.add(hit["text"])
                        bullets.append(f"- ({question}) {hit['text']} [{hit['note']}]")
            return "\n".join(bullets)

        report = await tools.call("write_report", title="What our notes say about retries",
                                  text=await summarise())
        return {"questions": len(QUESTIONS), "sources": sorted({h["note"] for hits in found
                                                                for h in hits}),
                "report": report["file"]}
