"""Helpers around celery_durable for tests and scripts: a private redis-server
(`redis_server`), real worker subprocesses (`workers`), a local HTTP receiver
for rule actions (`http_receiver`), and the pytest plugin (`pytest`)."""
