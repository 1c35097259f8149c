"""A worker app on the fan-out tests' journal that defines none of their steps.

`celery -A tests.apps.fanout_lean worker -Q lean`: it gets the messages of
`fanout.elsewhere` (queue `lean`), whose code it lacks.
"""

from __future__ import annotations

import os

from . import NOWHERE_URL, REDIS_URL_ENV, make_worker_app

app = make_worker_app("tests.apps.fanout_lean", os.environ.get(REDIS_URL_ENV) or NOWHERE_URL)
