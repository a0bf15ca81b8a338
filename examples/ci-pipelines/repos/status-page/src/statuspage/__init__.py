"""Renders the status page from a list of services."""

from html import escape

BADGES = {"operational": "ok", "degraded": "warn", "outage": "down"}


def overall(services):
    states = {s["status"] for s in services}
    if "outage" in states:
        return "Major outage"
    if "degraded" in states:
        return "Partially degraded service"
    return "All systems operational"


def render(services):
    rows = "\n".join(
        f'    <li class="{BADGES[s["status"]]}">{escape(s["name"])}: {escape(s["status"])} '
        f'({s["uptime"]:.2f}% uptime)</li>' for s in services)
    return (f"<!doctype html>\n<title>Status</title>\n<h1>{overall(services)}</h1>\n"
            f"<ul>\n{rows}\n</ul>\n")
