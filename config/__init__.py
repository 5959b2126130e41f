"""Settings, Celery configuration and the default model catalog."""
