"""`celery -A app durable web`: the dashboard, the JSON API under /api/, webhook URLs.

Starlette served by uvicorn (the `web` extra): both are small, typed, and
speak ASGI, so the server is one object that tests and benchmarks can run in
a thread. The page is static HTML with plain JavaScript that polls the API:
no build step, nothing vendored.
"""
