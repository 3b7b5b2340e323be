"""Runs one job: a child process in its own working directory with the rental's accelerators visible, its output
streamed to the platform in numbered chunks, its accelerator time reported as usage events with idempotency keys,
and its end (exit status, time limit, cancel) reported last."""

import base64
import logging
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from agent.client import PlatformClient, PlatformError, Unreachable

logger = logging.getLogger("agent")

CHUNK_CHARS = 16_000  # one log chunk at most; a longer burst goes as several
KILL_GRACE_SECONDS = 5  # after SIGTERM, before SIGKILL
READ_BYTES = 4096


def _micros(moment: float) -> int:
    return round(moment * 1_000_000)


def _iso(moment: float) -> str:
    """The moment to the microsecond, rounded as `_seconds_between` rounds it."""
    seconds, micros = divmod(_micros(moment), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros).isoformat(timespec="microseconds")


def _seconds_between(start: float, end: float) -> Decimal:
    """Exactly what the platform computes from the two ISO times."""
    return Decimal(_micros(end) - _micros(start)) / Decimal(1_000_000)


class JobRun:
    """One job on this node; `run()` blocks until it has ended and everything about it has been reported."""

    def __init__(self, client: PlatformClient, job: dict, *, work_root: Path, flush_seconds=1.0, usage_seconds=60.0):
        self.client, self.job = client, job
        self.job_id = job["id"]
        self.work_dir = work_root / f"job-{self.job_id}"
        self.flush_seconds, self.usage_seconds = flush_seconds, usage_seconds
        self.cancel = threading.Event()
        self._pending: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._usage_seq = 0
        self._usage_from: float | None = None

    # --- output ---

    def _reader(self, stream, name: str) -> None:
        for raw in iter(lambda: stream.read1(READ_BYTES), b""):
            with self._lock:
                self._pending.append((name, raw.decode(errors="replace")))

    def _flush_log(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        chunks = []
        for name, text in pending:  # merge neighbours of one stream, then cut to CHUNK_CHARS
            if chunks and chunks[-1]["stream"] == name and len(chunks[-1]["text"]) + len(text) <= CHUNK_CHARS:
                chunks[-1]["text"] += text
                continue
            for start in range(0, len(text), CHUNK_CHARS):
                chunks.append({"seq": self._seq, "stream": name, "text": text[start : start + CHUNK_CHARS]})
                self._seq += 1
        if not chunks:
            return
        answer = self.client.post(f"jobs/{self.job_id}/log", {"chunks": chunks}) or {}
        if answer.get("cancel_requested"):
            self.cancel.set()

    # --- usage ---

    def _report_usage(self, until: float) -> None:
        """Accelerator-seconds from the last report to `until`, as one event whose key names the job and the
        period's number: a resend is the same event."""
        if self.job.get("metering") != "reported" or self._usage_from is None or until <= self._usage_from:
            return
        seconds = _seconds_between(self._usage_from, until)
        if seconds <= 0:
            return
        event = {
            "rental": self.job["rental"],
            "idempotency_key": f"job:{self.job_id}:usage:{self._usage_seq}",
            "dimension": "accelerator_seconds",
            "quantity": str(seconds * self.job["accelerators"]),
            "period_start": _iso(self._usage_from),
            "period_end": _iso(until),
        }
        answer = self.client.post("usage-events", {"events": [event]}) or {}
        for result in answer.get("results", []):
            if result.get("status") == "rejected":
                logger.warning("usage of job %s refused: %s", self.job_id, result.get("message"))
        self._usage_seq += 1
        self._usage_from = until

    # --- the process ---

    def _prepare(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name, content in (self.job.get("files") or {}).items():
            path = (self.work_dir / name).resolve()
            if self.work_dir.resolve() not in path.parents:
                raise ValueError(f"file {name!r} would land outside the job's directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(content))

    def _environment(self) -> dict:
        environment = {**os.environ, **(self.job.get("environment") or {})}
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.job.get("accelerator_indices", []))
        environment["MARKETPLACE_JOB_ID"] = str(self.job_id)
        environment["MARKETPLACE_RENTAL_ID"] = str(self.job["rental"])
        return environment

    def _stop(self, process: subprocess.Popen) -> None:
        """SIGTERM to the job's process group, SIGKILL after the grace period."""
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def run(self) -> str:
        """Run the job to its end and report it; returns the status reported."""
        try:
            self._prepare()
            process = subprocess.Popen(  # noqa: S603 — the buyer's own argv, on the node it rented
                self.job["command"],
                cwd=self.work_dir,
                env=self._environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopping it stops its children too
            )
        except (OSError, ValueError) as error:
            started = time.time()
            with self._lock:
                self._pending.append(("stderr", f"the agent could not start the job: {error}\n"))
            self._flush_log()
            return self._finish("failed", None, started, time.time())
        started = time.time()
        self._usage_from = started
        try:
            self.client.post(f"jobs/{self.job_id}/start", {"started_at": _iso(started)})
        except (PlatformError, Unreachable) as error:  # the finish report carries the start time too
            logger.warning("job %s: start not recorded: %s", self.job_id, error)
        readers = [
            threading.Thread(target=self._reader, args=(process.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._reader, args=(process.stderr, "stderr"), daemon=True),
        ]
        for reader in readers:
            reader.start()
        deadline = started + self.job["time_limit_seconds"]
        status, last_usage = None, started
        while process.poll() is None:
            time.sleep(min(self.flush_seconds, max(deadline - time.time(), 0.01)))
            try:
                self._flush_log()
                if time.time() - last_usage >= self.usage_seconds:
                    last_usage = time.time()
                    self._report_usage(last_usage)
            except (PlatformError, Unreachable) as error:
                logger.warning("job %s: %s", self.job_id, error)
            if self.cancel.is_set():
                status = "cancelled"
            elif time.time() >= deadline:
                status = "timed_out"
            if status:
                self._stop(process)
                break
        finished = time.time()
        for reader in readers:
            reader.join(timeout=KILL_GRACE_SECONDS)
        self._flush_log()
        if status is None:
            status = "succeeded" if process.returncode == 0 else "failed"
        return self._finish(status, process.returncode, started, finished)

    def _finish(self, status: str, exit_code: int | None, started: float, finished: float) -> str:
        self._report_usage(finished)
        self.client.post(
            f"jobs/{self.job_id}/finish",
            {"status": status, "exit_code": exit_code, "started_at": _iso(started), "finished_at": _iso(finished)},
        )
        logger.info("job %s %s (exit %s)", self.job_id, status, exit_code)
        return status
