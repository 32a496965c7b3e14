"""Bare Locust, the reference the harness is measured against: FastHttpUser, no wait, the
same request body as the agentscale benchmark scenario."""

import json

from locust import FastHttpUser, constant, task

BODY = json.dumps({"tenant_id": "acme", "input": "Where is order 4410?"})


class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def agent(self) -> None:
        self.client.post("/agent", data=BODY, headers={"Content-Type": "application/json"})
