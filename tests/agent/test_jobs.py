"""The agent's job runner and REST client, against a recording stand-in for the platform and a loopback server
that drops its first answer."""

import base64
import json
import sys
import threading
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.client import PlatformClient, PlatformError
from agent.jobs import JobRun


class RecordingPlatform:
    """What the runner sends, by path; answers as the platform does (cancel when told to)."""

    def __init__(self, cancel_after_logs: int | None = None):
        self.posts: list[tuple[str, dict]] = []
        self.cancel_after_logs = cancel_after_logs

    def post(self, path: str, payload: dict | None = None) -> dict:
        self.posts.append((path, payload))
        logs = sum(1 for p, _body in self.posts if p.endswith("/log"))
        cancel = self.cancel_after_logs is not None and logs >= self.cancel_after_logs
        return {"status": "running", "cancel_requested": cancel, "results": []}

    def sent(self, suffix: str) -> list[dict]:
        return [body for path, body in self.posts if path.endswith(suffix)]


def job(command: list[str], **fields) -> dict:
    return {"id": 7, "rental": 3, "command": command, "environment": {"GREETING": "你好"}, "files": {},
            "time_limit_seconds": 30, "accelerator_indices": [0, 1], "accelerators": 2, "metering": "reported",
            **fields}  # fmt: skip


def output(platform: RecordingPlatform) -> str:
    chunks = [chunk for body in platform.sent("/log") for chunk in body["chunks"]]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))  # numbered without gaps
    return "".join(chunk["text"] for chunk in chunks)


def test_a_job_runs_with_its_files_environment_and_accelerators_and_reports_its_end(tmp_path):
    platform = RecordingPlatform()
    code = "import os\nprint(open('data/in.txt').read(), os.environ['GREETING'], os.environ['CUDA_VISIBLE_DEVICES'])"
    files = {"data/in.txt": base64.b64encode(b"payload").decode()}

    status = JobRun(platform, job([sys.executable, "-c", code], files=files), work_root=tmp_path).run()

    assert status == "succeeded"
    assert output(platform) == "payload 你好 0,1\n"
    (finish,) = platform.sent("/finish")
    assert (finish["status"], finish["exit_code"]) == ("succeeded", 0)
    assert (tmp_path / "job-7" / "data" / "in.txt").read_bytes() == b"payload"


def test_usage_periods_are_contiguous_and_add_up_to_the_run_exactly(tmp_path):
    platform = RecordingPlatform()
    command = [sys.executable, "-c", "import time; time.sleep(0.7)"]
    runner = JobRun(platform, job(command), work_root=tmp_path, flush_seconds=0.05, usage_seconds=0.2)

    runner.run()

    events = [event for body in platform.sent("usage-events") for event in body["events"]]
    assert len(events) >= 3 and len({e["idempotency_key"] for e in events}) == len(events)
    for previous, following in zip(events, events[1:], strict=False):
        assert previous["period_end"] == following["period_start"]
    (finish,) = platform.sent("/finish")
    run = datetime.fromisoformat(finish["finished_at"]) - datetime.fromisoformat(finish["started_at"])
    seconds = Decimal(run.days * 86400 + run.seconds) + Decimal(run.microseconds) / 10**6
    assert sum(Decimal(e["quantity"]) for e in events) == seconds * 2  # two accelerators
    assert (events[0]["period_start"], events[-1]["period_end"]) == (finish["started_at"], finish["finished_at"])


def test_a_job_past_its_time_limit_is_stopped_and_reported_timed_out(tmp_path):
    platform = RecordingPlatform()

    status = JobRun(
        platform, job([sys.executable, "-c", "import time; time.sleep(30)"], time_limit_seconds=1), work_root=tmp_path
    ).run()

    assert status == "timed_out"
    (finish,) = platform.sent("/finish")
    run = datetime.fromisoformat(finish["finished_at"]) - datetime.fromisoformat(finish["started_at"])
    assert run.total_seconds() < 5


def test_a_job_the_buyer_cancels_is_stopped(tmp_path):
    platform = RecordingPlatform(cancel_after_logs=1)
    code = "import time\nfor i in range(300):\n    print(i, flush=True); time.sleep(0.05)"

    status = JobRun(platform, job([sys.executable, "-c", code]), work_root=tmp_path).run()

    assert status == "cancelled" and platform.sent("/finish")[0]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"command": ["/no/such/program"]}, "could not start the job"),
        ({"files": {"../../escape.txt": "eA=="}}, "outside the job's directory"),
    ],
)
def test_a_job_that_cannot_start_fails_with_the_reason_in_its_log(tmp_path, fields, said):
    platform = RecordingPlatform()

    status = JobRun(platform, job(["true"]) | fields, work_root=tmp_path).run()

    assert status == "failed" and said in output(platform)
    assert not (tmp_path.parent / "escape.txt").exists()


class DropsFirstAnswer(BaseHTTPRequestHandler):
    """Reads every request; hangs up on the first one without answering (the answer lost on the way)."""

    received: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        if len(type(self).received) == 1:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if self.path.endswith("/refused"):
            self.send_response(403)
            answer = {"error": {"code": "invalid_node_token", "message": "no"}}
        else:
            self.send_response(200)
            answer = {"accepted": 0, "duplicates": 1}
        raw = json.dumps(answer).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_platform():
    DropsFirstAnswer.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), DropsFirstAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_report_whose_answer_was_lost_is_sent_again_unchanged(flaky_platform):
    client = PlatformClient(flaky_platform, "mkn_x_y", backoff=0.01)
    report = {"events": [{"idempotency_key": "job:7:usage:0", "quantity": "2.5"}]}

    answer = client.post("usage-events", report)

    assert DropsFirstAnswer.received == [report, report]  # the same key: the platform counts it once
    assert answer == {"accepted": 0, "duplicates": 1}


def test_a_refusal_is_not_retried(flaky_platform):
    client = PlatformClient(flaky_platform, "mkn_x_y", backoff=0.01)

    with pytest.raises(PlatformError) as refused:
        client.post("refused", {})

    assert refused.value.status == 403 and refused.value.code == "invalid_node_token"
    assert len(DropsFirstAnswer.received) == 2  # the dropped first try, then the refusal, not retried
