"""status-page's pipeline: a static site, so no package to install. It validates its data,
runs its unit tests (the standard library's unittest), builds the page, and on main deploys it
to production after an approval, then checks the deployed page is the one that was built.
"""

import asyncio

from workers import WorkflowEntrypoint

REPO = "status-page"

PAGE = "public/index.html"


class Pipeline(WorkflowEntrypoint):
    async def run(self, event, step):
        push = event["payload"]          # the webhook: sha, branch, pr
        sha, branch = push.get("sha", "HEAD"), push.get("branch", "main")
        sandbox = self.env.SANDBOX

        @step.do("checkout")
        async def checkout():
            return await sandbox.checkout(sha)

        @step.do("install")
        async def install():
            # Nothing to install: the build uses the standard library only. Record the runtime.
            return await sandbox.run(["python", "-c", "import sys; print(sys.version)"])

        await checkout()
        await install()

        @step.do("validate data")
        async def validate_data():
            return await sandbox.run(["python", "build.py", "--check"])

        @step.do("unittest")
        async def unittest():
            return await sandbox.run(["python", "-m", "unittest", "discover", "-s", "tests"])

        @step.do("build site")
        async def build_site():
            return await sandbox.run(["python", "build.py"], artifacts=[PAGE])

        names = ["validate data", "unittest", "build site"]
        checks = dict(zip(names, await asyncio.gather(validate_data(), unittest(), build_site())))
        failed = [name for name, result in checks.items() if result["exit_code"] != 0]
        page = checks["build site"]["artifacts"].get(PAGE)
        summary = {"repo": REPO, "sha": sha, "branch": branch,
                   "conclusion": "failure" if failed else "success", "failed": failed,
                   "checks": {name: "failed" if name in failed else "passed" for name in checks},
                   "page": page}

        if push.get("pr"):
            @step.do("comment on pull request")
            async def comment():
                state = "ready to deploy" if not failed else "failing: " + ", ".join(failed)
                preview = f"{page['bytes']} bytes, sha256 {page['sha256']}" if page else "no page"
                return await self.env.PULL_REQUESTS.comment(
                    push["pr"], f"status-page preview for `{sha}`: {state} ({preview})\n")

            summary["comment"] = (await comment())["file"]

        if branch != "main" or failed:
            return summary
        try:
            approval = await step.wait_for_event("deploy approval", "deploy-approval",
                                                 timeout="24 hours")
        except Exception:
            return {**summary, "deploy": {"skipped": "no approval within 24 hours"}}
        if not approval["payload"].get("approved"):
            return {**summary, "deploy": {"skipped": "rejected"}}

        @step.do("deploy to production")
        async def deploy_to_production():
            return await self.env.DEPLOYMENTS.deploy("production", sha, page)

        deployed = await deploy_to_production()

        @step.do("verify deployment")
        async def verify_deployment():
            return {"url": deployed["url"], "serves_built_page": deployed["artifact"] == page}

        return {**summary, "deploy": deployed, "verified": await verify_deployment()}
