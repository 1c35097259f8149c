"""The app of `tests.apps.deploys` for real workers: `celery -A tests.apps.deploys_app worker`.

The code version a worker runs comes from `DURABLE_TEST_CODE_VERSION` (see
`tests.apps.deploys`): an old and a new worker side by side are a rolling
deploy. Blocked runs are tried again after a second, not five minutes.
"""

from __future__ import annotations

import os

from celery import Celery

from . import NOWHERE_URL, REDIS_URL_ENV, make_worker_app
from . import deploys as deploys  # registers the workflows


def make_app(redis_url: str, main: str = "tests.apps.deploys_app") -> Celery:
    return make_worker_app(main, redis_url, durable_blocked_retry_after=1.0)


app = make_app(os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)
