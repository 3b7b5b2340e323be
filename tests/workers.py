"""A real Celery worker process for crash tests: started as production runs it, against the test database and a
real broker, so that it can be killed with SIGKILL and restarted."""

import os
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
BROKERS = {
    "redis": os.environ.get("TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/14"),
    "rabbitmq": os.environ.get("TEST_RABBITMQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}

# On Redis the unacked task of a dead worker comes back after 2 s instead of twice the task time limit, and the
# scan for such tasks runs on every restore cycle (10 s), not every 10th.
WORKER = """
import sys
from marketplace.celery import app
if app.conf.broker_url.startswith("redis"):
    app.conf.broker_transport_options = {"visibility_timeout": 2, "unacked_restore_throttle": 1}
app.worker_main(sys.argv[1:])
"""


def worker_start(broker_url: str, queue: str, log: Path) -> subprocess.Popen:
    """A worker consuming only `queue`, so that it takes no task of another test or process."""
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict),
        "CELERY_BROKER_URL": broker_url,
        "DATABASE_CONN_MAX_AGE": "0",
    }
    arguments = [
        "worker", "--pool=solo", "-Q", queue, "--without-mingle", "--without-gossip", "--loglevel=INFO",
        f"--hostname=crash-{queue}@%h",
    ]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *arguments], cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the worker's log ends:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
