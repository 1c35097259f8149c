"""`python -m example_project.demo`: the shop, end to end, on a real worker.

Starts a private redis-server (unless `DURABLE_REDIS_URL` or `REDIS_URL` names
a Redis), a local stand-in for a Slack webhook, one `celery -A example_project
worker` subprocess, a few order runs (which sleep, then wait for an approval
event the demo sends), and prints what the journal recorded for each and what
the automation rules did: retries of a flaky task, a Slack message, audit
lines from the project's plugin. Exits 0 only if everything ended as
expected and nothing is left running.
"""
