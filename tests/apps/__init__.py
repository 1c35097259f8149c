"""Celery app modules that real `celery worker` subprocesses load in the slow tests.

Each app reads its Redis (broker and journal) from `REDIS_URL_ENV`, which
`tests.worker_processes` sets for every worker it starts.
"""

REDIS_URL_ENV = "DURABLE_TEST_REDIS_URL_FOR_WORKERS"

# Where an app points when `REDIS_URL_ENV` is not set (a module imported by the
# test process only for its workflow definitions): a closed port, so that it
# can never reach a real Redis (such as a system one on 6379) by accident.
NOWHERE_URL = "redis://127.0.0.1:1/0"
