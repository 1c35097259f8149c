"""Helpers around celery_durable: a private redis-server, the pytest plugin."""
