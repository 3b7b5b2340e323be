"""Tasks leave only after commit, and travel through a real broker to a real worker."""

import os
import time

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.core.cache import cache
from django.db import transaction

from marketplace.celery import app
from marketplace.services.health import HEARTBEAT_CACHE_KEY
from marketplace.tasks import health_check_task
from tests.conftest import skip_or_fail

QUEUE = app.conf.task_default_queue


class Rollback(Exception):
    pass


@pytest.fixture
def redis_broker(monkeypatch):
    url = os.environ.get("TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/15")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        skip_or_fail("redis", f"needs a Redis broker at {url}")
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads the variable before its own setting
    monkeypatch.setattr(app.conf, "broker_url", url)
    app._pool = None  # pools are bound to the broker they were made for
    app.amqp._producer_pool = None
    client.flushdb()
    yield client
    client.flushdb()
    app._pool = None
    app.amqp._producer_pool = None


def test_task_enqueued_on_commit_is_not_sent_when_the_transaction_rolls_back(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(Rollback), transaction.atomic():
        health_check_task.delay_on_commit()
        raise Rollback
    assert callbacks == []


@pytest.mark.redis
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rolled_back_task_never_reaches_the_broker_and_committed_one_does(redis_broker):
    # when: one transaction rolls back, another commits
    with pytest.raises(Rollback), transaction.atomic():
        health_check_task.delay_on_commit()
        raise Rollback
    after_rollback = redis_broker.llen(QUEUE)
    with transaction.atomic():
        health_check_task.delay_on_commit()
        inside_transaction = redis_broker.llen(QUEUE)
    # then
    assert after_rollback == 0
    assert inside_transaction == 0
    assert redis_broker.llen(QUEUE) == 1


@pytest.mark.redis
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_committed_task_runs_on_a_real_worker_through_redis(redis_broker):
    # given
    assert cache.get(HEARTBEAT_CACHE_KEY) is None
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        # when
        with transaction.atomic():
            result = health_check_task.delay_on_commit()
        # then: the worker ran it (the heartbeat lands in the shared cache)
        for _ in range(100):
            if cache.get(HEARTBEAT_CACHE_KEY):
                break
            time.sleep(0.1)
    assert result is None  # delay_on_commit returns nothing: the id exists only after commit
    assert cache.get(HEARTBEAT_CACHE_KEY) is not None
    assert redis_broker.llen(QUEUE) == 0


def test_tasks_retry_transient_errors_with_backoff_and_send_on_commit():
    from django.db import OperationalError

    assert issubclass(OperationalError, health_check_task.autoretry_for)
    assert health_check_task.retry_backoff is True
    assert health_check_task.max_retries == 8
    assert hasattr(health_check_task, "delay_on_commit")
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
