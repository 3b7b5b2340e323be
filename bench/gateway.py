"""Gateway proxy bench (BENCHMARKS.md §2.5): the product's /v1/chat/completions against the direct upstream call
(floor), a thin aiohttp pass-through (Python floor) and LiteLLM's proxy (peer), interleaved in one run.

  python -m bench.gateway [--rounds 7] [--requests 40] [--duration 8] [--litellm PATH]

Needs PostgreSQL and Redis on 127.0.0.1 and wrk. LiteLLM runs from its own virtual environment (`--litellm`, the
`litellm` executable; default /tmp/litellm-venv/bin/litellm, made with `pip install 'litellm[proxy]'`), DB-less and
offline; without it the peer's cells are skipped and said so. Every server runs one worker.
"""

import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

from bench.harness import ROOT, free_port, fresh_database, log, log_checks, process_cpu_seconds, wrk_measure

BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench_gateway")
BENCH_REDIS_URL = os.environ.get("BENCH_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/12")
MESSAGES = [{"role": "user", "content": "Say hello in eight tokens."}]
SLOW_UPSTREAM_MS = 200
THIN_KEY = "thin-bench-key"


class Variant:
    """One way to reach the fake upstream: its URL, key and the `model` it is called with."""

    def __init__(self, name: str, port: int, key: str, model: str, process: subprocess.Popen | None) -> None:
        self.name, self.port, self.key, self.model, self.process = name, port, key, model, process

    def body(self, *, stream: bool = False) -> bytes:
        request = {"model": self.model, "messages": MESSAGES, "max_tokens": 16}
        if stream:
            request["stream"] = True
        return json.dumps(request).encode()

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"}


def wait_http(port: int, path: str, timeout: float = 60, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
            urllib.request.urlopen(request, timeout=2)  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers on port {port}")


def start(command: list[str], env: dict | None = None, *, clean: bool = False) -> subprocess.Popen:
    """A server process; `clean`: with only PATH and HOME of this one's environment (LiteLLM takes a DATABASE_URL
    as its own and would start its database mode)."""
    base = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ} if clean else os.environ
    return subprocess.Popen(command, cwd=ROOT, env={**base, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def start_upstream(delay_ms: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    process = start([uvicorn, "bench.fake_upstream:app", "--port", str(port), "--loop", "uvloop", "--http",
                     "httptools", "--no-access-log", "--log-level", "warning"],
                    {"FAKE_UPSTREAM_DELAY_MS": str(delay_ms)})  # fmt: skip
    wait_http(port, "/counts")
    return process, port


def build_product_data(fast_port: int, slow_port: int) -> tuple[str, str]:
    """A provider with two services on the fake upstreams, a buyer with funds and a gateway key; limits high enough
    never to refuse the bench (they are still counted on every call)."""
    from accounts import services as account_services
    from billing.services.topups import topup_test_credit
    from marketplace.models import GatewayPolicy, ModelService

    owner = account_services.user_sign_up(email="bench-provider@example.cn", password="bench-pass-2026-x")
    provider = account_services.organization_create(name="bench", owner=owner)
    user = account_services.user_sign_up(email="bench-buyer@example.cn", password="bench-pass-2026-x")
    buyer = account_services.organization_create(name="Bench buyer", owner=user)
    topup_test_credit(organization=buyer, amount=Decimal("1000000"))
    GatewayPolicy.objects.create(organization=buyer, requests_per_minute=10**8, tokens_per_minute=2 * 10**9)
    for slug, port in (("fast", fast_port), ("slow", slow_port)):
        ModelService.objects.create(
            provider=provider, name=slug, slug=slug, model_family="bench", modality="chat", context_length=8192,
            max_output_tokens=1024, precision="bf16", input_price_per_1k_tokens=Decimal("0.002"),
            output_price_per_1k_tokens=Decimal("0.006"), rate_limit_rpm=10**6, rate_limit_tpm=10**9,
            residency_zone="cn-east", upstream_base_url=f"http://127.0.0.1:{port}/v1", upstream_model=f"product-{slug}",
            status="published",
        )  # fmt: skip
    key = account_services.api_key_create(organization=buyer, created_by=user, name="bench", scopes=["gateway"])[1]
    return key, provider.slug


def start_product(env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    process = start([uvicorn, "marketplace.asgi:application", "--port", str(port), "--loop", "uvloop", "--http",
                     "httptools", "--no-access-log", "--log-level", "warning", "--lifespan", "on"], env)  # fmt: skip
    wait_http(port, "/v1/models")
    return process, port


def start_litellm(executable: str, fast_port: int, workdir: Path) -> tuple[subprocess.Popen, int, str] | None:
    if not Path(executable).exists():
        return None
    port, master_key = free_port(), "sk-bench-" + secrets.token_hex(16)
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench-model\n"
        "    litellm_params:\n"
        "      model: openai/litellm\n"
        f"      api_base: http://127.0.0.1:{fast_port}/v1\n"
        "      api_key: sk-upstream\n"
        "      rpm: 100000000\n"
        "      tpm: 10000000000\n"
        "router_settings:\n"
        "  enable_pre_call_checks: true\n"
    )
    env = {"LITELLM_MASTER_KEY": master_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    process = start([executable, "--config", str(config), "--port", str(port), "--num_workers", "1"], env, clean=True)
    wait_http(port, "/health/liveliness", timeout=120)
    return process, port, master_key


def sequential_ms(variant: Variant, count: int, *, stream: bool) -> float:
    """Median milliseconds of `count` calls one after another on one keep-alive connection: to the whole answer,
    or for a stream to its first chunk (the rest is read before the next call)."""
    connection = http.client.HTTPConnection("127.0.0.1", variant.port, timeout=30)
    timings = []
    for _ in range(count):
        began = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=variant.body(stream=stream), headers=variant.headers())
        response = connection.getresponse()
        if stream:
            response.read1(65536)
            timings.append(time.perf_counter() - began)
            response.read()
        else:
            response.read()
            timings.append(time.perf_counter() - began)
        if response.status != 200:
            raise RuntimeError(f"{variant.name}: {response.status}")
    connection.close()
    return 1000 * statistics.median(timings)


def wrk_script(variant: Variant, workdir: Path) -> str:
    path = workdir / f"{variant.name}.lua"
    headers = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in variant.headers().items())
    path.write_text(f'wrk.method = "POST"\nwrk.body = [[{variant.body().decode()}]]\n{headers}')
    return str(path)


def hang_up_mid_stream(variant: Variant, count: int) -> None:
    """Open `count` streams, read the first bytes of each answer and close the connection."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", variant.port), timeout=10) as sock:
            body = variant.body(stream=True)
            head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {variant.key}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
            sock.sendall(head.encode() + body)
            sock.recv(256)


def upstream_counts(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/counts", timeout=5) as response:  # noqa: S310
        return json.loads(response.read())


def metered_by_product() -> dict:
    from django.db.models import Count, Sum

    from marketplace.models import ModelCall
    from marketplace.services.model_calls import model_calls_flush

    model_calls_flush()
    rows = ModelCall.objects.values("model_service__upstream_model").annotate(
        requests=Count("pk"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens")
    )
    return {row.pop("model_service__upstream_model"): row for row in rows}


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the sequential latency cells")
    parser.add_argument("--requests", type=int, default=40, help="calls per variant per latency round")
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk cell")
    parser.add_argument("--load-rounds", type=int, default=3, help="interleaved rounds of the wrk cells")
    parser.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm", help="LiteLLM's executable")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    os.environ["GATEWAY_REDIS_URL"] = BENCH_REDIS_URL
    os.environ["GATEWAY_UPSTREAM_ALLOWED_NETWORKS"] = "127.0.0.1/32"  # the fake upstreams run on loopback
    log(f"==> database {BENCH_DATABASE_URL}, gateway counters in {BENCH_REDIS_URL}")
    fresh_database(BENCH_DATABASE_URL)
    processes = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        fast, fast_port = start_upstream(0)
        slow, slow_port = start_upstream(SLOW_UPSTREAM_MS)
        processes += [fast, slow]
        key, provider_slug = build_product_data(fast_port, slow_port)
        env = {"DATABASE_URL": BENCH_DATABASE_URL, "DJANGO_SETTINGS_MODULE": "bench.settings", "CACHE_URL": "locmem://",
               "GATEWAY_REDIS_URL": BENCH_REDIS_URL, "DJANGO_DEBUG": "0"}  # fmt: skip
        product, product_port = start_product(env)
        processes.append(product)
        thin_ports, thin = {}, {}
        for name, port in (("fast", fast_port), ("slow", slow_port)):
            thin_ports[name] = free_port()
            thin[name] = start([sys.executable, "-m", "bench.thin_proxy", str(thin_ports[name]),
                                f"http://127.0.0.1:{port}/v1"])  # fmt: skip
            processes.append(thin[name])
            wait_http(thin_ports[name], "/counts")
        litellm = start_litellm(args.litellm, fast_port, workdir)
        variants = {
            "direct": Variant("direct", fast_port, "none", "direct", fast),
            "thin": Variant("thin", thin_ports["fast"], THIN_KEY, "thin", thin["fast"]),
            "product": Variant("product", product_port, key, f"{provider_slug}/fast", product),
        }
        if litellm is None:
            log(f"==> LiteLLM not found at {args.litellm}: the peer's cells are skipped")
        else:
            processes.append(litellm[0])
            variants["litellm"] = Variant("litellm", litellm[1], litellm[2], "bench-model", litellm[0])
        slow_variants = {
            "direct": Variant("direct-200ms", slow_port, "none", "direct", slow),
            "thin": Variant("thin-200ms", thin_ports["slow"], THIN_KEY, "thin", thin["slow"]),
            "product": Variant("product-200ms", product_port, key, f"{provider_slug}/slow", product),
        }
        for variant in variants.values():  # warm-up: connections, caches, the gateway hold
            sequential_ms(variant, 20, stream=False)
            sequential_ms(variant, 5, stream=True)

        log(f"==> sequential latency: {args.rounds} interleaved rounds × {args.requests} calls, median of medians")
        whole = {name: [] for name in variants}
        first_chunk = {name: [] for name in variants}
        for _round in range(args.rounds):
            for name, variant in variants.items():
                whole[name].append(sequential_ms(variant, args.requests, stream=False))
                first_chunk[name].append(sequential_ms(variant, args.requests, stream=True))
        latency = {name: statistics.median(values) for name, values in whole.items()}
        ttfc = {name: statistics.median(values) for name, values in first_chunk.items()}
        for name in variants:
            log(f"latency  {name:<8} whole {latency[name]:7.3f} ms (+{latency[name] - latency['direct']:.3f})   "
                f"stream first chunk {ttfc[name]:7.3f} ms (+{ttfc[name] - ttfc['direct']:.3f})")  # fmt: skip

        log(f"==> throughput: wrk, {args.load_rounds} interleaved rounds × {args.duration:.0f} s per cell")
        fast_cells = {name: [] for name in variants}
        slow_cells = {name: [] for name in slow_variants}
        for _round in range(args.load_rounds):
            for name, variant in variants.items():
                fast_cells[name].append(wrk_measure(
                    f"http://127.0.0.1:{variant.port}/v1/chat/completions", args.duration, {}, variant.process.pid,
                    connections=32, script=wrk_script(variant, workdir), cpu_seconds=process_cpu_seconds,
                ))  # fmt: skip
            for name, variant in slow_variants.items():
                slow_cells[name].append(wrk_measure(
                    f"http://127.0.0.1:{variant.port}/v1/chat/completions", args.duration, {}, variant.process.pid,
                    connections=256, script=wrk_script(variant, workdir), cpu_seconds=process_cpu_seconds,
                ))  # fmt: skip
        rps = {name: statistics.median(cell.rps for cell in cells) for name, cells in fast_cells.items()}
        for name, cells in fast_cells.items():
            p99 = statistics.median(cell.p99_ms for cell in cells)
            cpu = statistics.median(cell.cpu_ms_per_request for cell in cells)
            log(f"c=32     {name:<8} {rps[name]:9.0f} rps  p99 {p99:7.2f} ms  server CPU {cpu:.3f} ms/request")
        slow_rps = {name: statistics.median(cell.rps for cell in cells) for name, cells in slow_cells.items()}
        for name in slow_cells:
            log(f"c=256    {name:<8} {slow_rps[name]:9.0f} rps (upstream {SLOW_UPSTREAM_MS} ms)")

        log("==> metering: client hang-ups mid-stream, then the product's records against the upstream's usage")
        hang_up_mid_stream(variants["product"], 50)
        time.sleep(2)  # every call settles just after its answer
        served = {**upstream_counts(fast_port), **{f"{m}": c for m, c in upstream_counts(slow_port).items()}}
        metered = metered_by_product()
        checks = {}
        for model in ("product-fast", "product-slow"):
            upstream = served.get(model, {})
            mine = metered.get(model, {})
            checks[f"{model}: {upstream.get('requests')} calls, tokens metered == upstream usage"] = all(
                mine.get(field) == upstream.get(field) for field in ("requests", "prompt_tokens", "completion_tokens")
            )
        passed = log_checks("check", checks, [])

        log("==> ratios (targets in BENCHMARKS.md §2.5)")
        added = {name: latency[name] - latency["direct"] for name in variants}
        added_first = {name: ttfc[name] - ttfc["direct"] for name in variants}
        if "litellm" in variants:
            log(
                f"ratio added latency product / LiteLLM     {ratio(added['product'], added['litellm'])} (target ≤ 0.25)"
            )
            log(f"ratio added first chunk product / LiteLLM {ratio(added_first['product'], added_first['litellm'])}"
                " (target ≤ 0.25)")  # fmt: skip
            log(f"ratio rps c=32 product / LiteLLM          {ratio(rps['product'], rps['litellm'])} (target ≥ 5)")
            log("note     LiteLLM runs DB-less (no per-key budgets: its database mode downloads binaries at start and"
                " cannot run offline); the product looks up a hashed key, counts rate limits and reserves funds in"
                " Redis and records every call")  # fmt: skip
        log(f"ratio added latency product / thin        {ratio(added['product'], added['thin'])} (target ≤ 5)")
        log(f"ratio rps c=256 200 ms product / thin     {ratio(slow_rps['product'], slow_rps['thin'])} (target ≥ 0.8)")
        log(f"ratio rps c=32 product / thin             {ratio(rps['product'], rps['thin'])}")
        if not passed:
            sys.exit(1)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
