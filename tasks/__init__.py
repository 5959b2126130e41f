"""Celery wiring: the app, thin task functions, and the Redis channels between web and workers."""
