"""The base class of every Celery task: sent on commit (DjangoTask) and retried with backoff on transient errors."""

from celery.contrib.django.task import DjangoTask
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

# Lock timeouts, dropped connections and broker hiccups pass; bad data does not, so it fails at once.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerOperationalError, ConnectionError, TimeoutError)


class PlatformTask(DjangoTask):
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = True  # 1 s, 2 s, 4 s … with jitter
    retry_backoff_max = 600
    retry_jitter = True
    max_retries = 8
