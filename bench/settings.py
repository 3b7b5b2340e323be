"""Settings for benchmark servers: the product's settings plus the ceiling and peer views of bench/urls.py."""

from marketplace.settings import *  # noqa: F403 - the product's settings, unchanged but for the lines below

ROOT_URLCONF = "bench.urls"
DEBUG = False
ALLOWED_HOSTS = ["*"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
