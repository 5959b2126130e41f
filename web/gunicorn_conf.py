"""Gunicorn settings for the web process: one process of threads, since views mostly wait on Redis."""

from config.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.server_host}:{_settings.server_port}"
worker_class = "gthread"
workers = 1
threads = _settings.web_threads
timeout = 120
graceful_timeout = 10
keepalive = 5
accesslog = "-"
