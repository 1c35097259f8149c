"""What runs inside a Celery worker: the bootstep and the internal tasks."""
