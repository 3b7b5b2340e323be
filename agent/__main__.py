"""The provider agent: `python -m agent --url https://… --token mkn_…` (or `marketplace-agent`, installed from
agent/). It registers this node, benchmarks it when the platform asks, heartbeats, and runs the jobs of the
rentals placed on it. `python -m agent detect` and `python -m agent benchmark` print what it would report.
"""

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from agent import __version__
from agent.benchmark import BenchmarkUnavailable, benchmark_node
from agent.client import PlatformClient, PlatformError, Unreachable
from agent.hardware import detect_accelerators, host_facts, telemetry
from agent.jobs import JobRun

logger = logging.getLogger("agent")


class Agent:
    def __init__(self, client: PlatformClient, args: argparse.Namespace):
        self.client, self.args = client, args
        self.work_root = Path(args.work_dir).resolve()
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.detection = detect_accelerators()
        self.jobs: dict[int, tuple[JobRun, threading.Thread]] = {}
        self.heartbeat_seconds = args.heartbeat_seconds

    def register(self) -> dict:
        facts = {**host_facts(str(self.work_root)), **self.detection.as_payload(), "agent_version": __version__}
        answer = self.client.post("register", facts)
        logger.info("registered as node %s (%s) in offering %s", answer["node"], answer["name"], answer["offering"])
        if self.detection.error:
            logger.error("accelerator detection failed: %s", self.detection.error)
        self.heartbeat_seconds = self.args.heartbeat_seconds or answer.get("heartbeat_seconds", 15)
        return answer

    def benchmark(self) -> None:
        logger.info("benchmarking (%s)", "accelerators" if self.detection.accelerators else "CPU")
        try:
            figures = benchmark_node(
                has_accelerators=bool(self.detection.accelerators),
                size=self.args.benchmark_size,
                min_seconds=self.args.benchmark_seconds,
                cpu_name=host_facts(str(self.work_root))["cpu_model"],
            )
        except BenchmarkUnavailable as error:
            figures = {"backend": "none", "devices": [], "error": str(error)}
        answer = self.client.post("benchmarks", figures) or {}
        logger.info("benchmark recorded: %s", json.dumps(answer.get("tflops", {})))

    def heartbeat(self) -> dict:
        self._reap()
        readings = {**telemetry(self.detection), "running_jobs": sorted(self.jobs)}
        return self.client.post("heartbeat", {"telemetry": readings}) or {}

    def _reap(self) -> None:
        for job_id in [job_id for job_id, (_run, thread) in self.jobs.items() if not thread.is_alive()]:
            del self.jobs[job_id]

    def _start_jobs(self) -> None:
        while True:
            job = self.client.post("jobs/claim")
            if not job:
                return
            run = JobRun(self.client, job, work_root=self.work_root, usage_seconds=self.args.usage_seconds)
            thread = threading.Thread(target=self._run_job, args=(run,), name=f"job-{job['id']}", daemon=True)
            self.jobs[job["id"]] = (run, thread)
            thread.start()

    def _run_job(self, run: JobRun) -> None:
        try:
            run.run()
        except (PlatformError, Unreachable) as error:
            logger.error("job %s: %s", run.job_id, error)

    def step(self) -> None:
        """One heartbeat and what it asks for."""
        answer = self.heartbeat()
        for job_id in answer.get("cancel_jobs", []):
            if job_id in self.jobs:
                self.jobs[job_id][0].cancel.set()
        if answer.get("benchmark_wanted") and not self.jobs:
            self.benchmark()
        if answer.get("placements"):
            self._start_jobs()

    def serve(self) -> None:
        while True:  # a platform that is down at the node's boot is waited for, not a reason to exit
            try:
                answer = self.register()
                break
            except (Unreachable, PlatformError) as error:
                if isinstance(error, PlatformError) and error.status in (401, 403):
                    raise
                logger.warning("cannot register yet: %s", error)
                time.sleep(self.args.heartbeat_seconds or 15)
        if answer.get("benchmark_wanted"):
            self.benchmark()
        while True:
            started = time.monotonic()
            try:
                self.step()
            except Unreachable as error:
                logger.warning("heartbeat missed: %s", error)
            except PlatformError as error:
                if error.status in (401, 403):
                    raise
                logger.error("heartbeat refused: %s", error)  # kept going: the next one may pass
            time.sleep(max(self.heartbeat_seconds - (time.monotonic() - started), 0.05))


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="marketplace-agent", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "detect", "benchmark"])
    parser.add_argument("--url", default=os.environ.get("MARKETPLACE_URL", ""), help="the platform's base URL")
    token = os.environ.get("MARKETPLACE_NODE_TOKEN", "")
    parser.add_argument("--token", default=token, help="the node token (or MARKETPLACE_NODE_TOKEN)")
    parser.add_argument("--work-dir", default=os.environ.get("MARKETPLACE_WORK_DIR", "marketplace-agent-work"))
    parser.add_argument("--heartbeat-seconds", type=float, default=0, help="default: what the platform says")
    parser.add_argument("--usage-seconds", type=float, default=60, help="how often a running job's usage is reported")
    parser.add_argument("--benchmark-size", type=int, default=None, help="matrix size (default 8192 GPU, 2048 CPU)")
    parser.add_argument("--benchmark-seconds", type=float, default=0.5, help="time per measurement at least")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.command == "detect":
        detection = detect_accelerators()
        facts = host_facts(args.work_dir if os.path.isdir(args.work_dir) else ".")
        print(json.dumps({**facts, **detection.as_payload()}, indent=2))
        return 1 if detection.error else 0
    if args.command == "benchmark":
        detection = detect_accelerators()
        figures = benchmark_node(
            has_accelerators=bool(detection.accelerators), size=args.benchmark_size, min_seconds=args.benchmark_seconds
        )
        print(json.dumps(figures, indent=2))
        return 0
    if not args.url or not args.token:
        needed = "--url and --token (or MARKETPLACE_URL and MARKETPLACE_NODE_TOKEN) are needed"
        print(f"marketplace-agent: {needed}", file=sys.stderr)
        return 2
    agent = Agent(PlatformClient(args.url, args.token), args)
    try:
        agent.serve()
    except PlatformError as error:
        if error.status in (401, 403):  # a revoked or wrong token stays wrong: stop instead of looping
            logger.error("the platform refused this node's token: %s", error)
            return 3
        raise
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
