"""What every bench shares: a fresh database, Django on it, COPY, a gunicorn server, its CPU time, logging."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


BROKERS = {
    "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
    "rabbitmq": os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
# The columns the benches' offerings are COPY'd with (the others take their defaults).
OFFERING_COLUMNS = [
    "created_at", "updated_at", "provider_id", "site_id", "accelerator_id", "name", "description",
    "accelerators_per_node", "vcpu_per_node", "ram_gb_per_node", "disk_gb_per_node", "network_gbps",
    "capacity_nodes", "rented_nodes", "on_demand_price", "min_rental_hours", "status", "published_at",
    "verified_tflops", "metering",
]  # fmt: skip


def log(message: str) -> None:
    print(message, flush=True)


def log_checks(label: str, checks: dict[str, bool], errors: list[str]) -> bool:
    """Print each correctness check (its text, ok or FAILED) and the first errors; True when all passed."""
    for text, passed in checks.items():
        log(f"{label}  {text:<70} {'ok' if passed else 'FAILED'}")
    if errors:
        log("  first errors: " + "; ".join(errors[:3]))
    return all(checks.values())


def recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = url.replace(parts.path, "/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["CACHE_URL"] = "locmem://"
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()


def fresh_database(url: str) -> None:
    """Drop and recreate the bench's database, start Django on it and migrate it."""
    recreate_database(url)
    setup_django(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def copy_rows(table: str, columns: list[str], rows) -> int:
    from django.db import connection

    count = 0
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def bench_site_and_accelerator():
    """The one site and the accelerator model that a bench's offerings are on."""
    from marketplace.models import AcceleratorModel, Site

    site = Site.objects.create(name="Bench site", slug="bench-site", region="yangtze-delta", tier="central",
                               residency_zone="cn-east", operator="China Telecom")  # fmt: skip
    return site, AcceleratorModel.objects.get(slug="nvidia-h100-sxm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(url: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "CACHE_URL": "locmem://", "DJANGO_SETTINGS_MODULE": "bench.settings"}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    server = subprocess.Popen(
        [gunicorn, "marketplace.wsgi:application", "-w", str(workers), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)  # noqa: S310 - loopback only
            return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not start")


WORKER = """
import sys
from marketplace.celery import app
app.worker_main(sys.argv[1:])
"""


def start_worker(url: str, broker_url: str, queue: str, log_path: Path, include: list[str] = ()) -> subprocess.Popen:
    """A Celery worker of the project as the scale profile runs it (prefork; one process here) on the bench's
    database, consuming `queue` of one broker; named after its log, which must be unique per worker. Not the solo
    pool: with late acks and a prefetch of one, its loop sends an AMQP ack only at its next 2-second poll, so a
    RabbitMQ worker idles up to 2 s between tasks (celery/celery#10263)."""
    env = {**os.environ, "DATABASE_URL": url, "CELERY_BROKER_URL": broker_url, "CACHE_URL": "locmem://",
           "DJANGO_SETTINGS_MODULE": "bench.settings"}  # fmt: skip
    arguments = ["worker", "--pool=prefork", "--concurrency=1", "-Q", queue, "--without-mingle", "--without-gossip",
                 "--loglevel=INFO", f"--hostname={log_path.stem}@%h"]  # fmt: skip
    arguments += [f"--include={module}" for module in include]
    return subprocess.Popen([sys.executable, "-c", WORKER, *arguments], cwd=ROOT, env=env,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)  # fmt: skip


def worker_cpu_seconds(master_pid: int) -> float:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, IndexError):
            continue
    return total / TICKS


def process_cpu_seconds(pid: int) -> float:
    """CPU time of one process (a server that runs its requests in itself, as uvicorn with one worker does)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass(frozen=True)
class WrkResult:
    rps: float
    cpu_ms_per_request: float
    p99_ms: float
    requests: int


def wrk_measure(
    url: str,
    duration: float,
    headers: dict[str, str],
    server_pid: int,
    connections: int = 8,
    script: str = "",
    cpu_seconds=worker_cpu_seconds,
) -> WrkResult:
    """Requests per second, server CPU milliseconds per request (`cpu_seconds` of the server pid) and p99 latency;
    wrk pinned to core 0."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if script:
        command += ["-s", script]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    cpu_before = cpu_seconds(server_pid)
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(server_pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    if "Non-2xx" in output:
        raise RuntimeError(f"non-2xx answers from {url}:\n{output}")
    p99, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", output).groups()
    p99_ms = float(p99) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return WrkResult(rps, 1000 * cpu / max(total, 1), p99_ms, total)


def run_wrk(
    url: str, duration: float, headers: dict[str, str], server_pid: int, connections: int = 8, script: str = ""
) -> tuple[float, float]:
    """Requests per second and server CPU milliseconds per request (of a gunicorn master's workers)."""
    result = wrk_measure(url, duration, headers, server_pid, connections=connections, script=script)
    return result.rps, result.cpu_ms_per_request
