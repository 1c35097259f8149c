"""`python -m example_project.demo`: the shop, end to end, on a real worker.

Starts a private redis-server (unless `DURABLE_REDIS_URL` or `REDIS_URL` names
a Redis), one `celery -A example_project worker` subprocess, a few order runs,
and prints what the journal recorded for each. Exits 0 only if every run ended
as expected and nothing is left running.
"""
