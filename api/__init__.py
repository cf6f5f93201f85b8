"""The job API: FastAPI on uvicorn (``python -m api``), see docs/api.md.

Modules: :mod:`~api.config` (environment), :mod:`~api.app` (assembly), :mod:`~api.service` (the
submission pipeline), ``routes_*`` (endpoints), :mod:`~api.admission` (circuit breaker, sync
concurrency), :mod:`~api.routing` (versions and traffic weights), :mod:`~api.auth`,
:mod:`~api.limits` (body size), :mod:`~api.metrics`, :mod:`~api.errors`, :mod:`~api.refresh`
(background reads), :mod:`~api.redis_client`, :mod:`~api.client` (Python client),
:mod:`~api.traffic` (live traffic CLI). Redis keys and the job protocol live in :mod:`jobqueue`.
"""
