"""An order shop built on celery_durable: the project that the README's demo runs.

The Celery app lives in `example_project.celery` (Celery's own project layout),
and is re-exported here so that `celery -A example_project worker` finds it.
"""

from .celery import app

__all__ = ["app"]
