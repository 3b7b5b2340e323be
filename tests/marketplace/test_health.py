from unittest.mock import patch

from marketplace.services.health import worker_heartbeat_record
from marketplace.tasks import health_check_task


def test_healthz_reports_database_broker_and_worker(db, client):
    worker_heartbeat_record()
    body = client.get("/healthz").json()
    assert body["ok"] is True
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True
    assert body["worker"]["ok"] is True


def test_healthz_is_503_when_the_broker_is_down(db, client):
    with patch("marketplace.services.health._broker_status", return_value={"ok": False, "error": "OperationalError"}):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False


def test_health_task_records_a_heartbeat(db, client):
    assert client.get("/healthz").json()["worker"]["ok"] is False
    health_check_task()
    assert client.get("/healthz").json()["worker"]["ok"] is True
