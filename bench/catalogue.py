"""Catalogue search benchmark (BENCHMARKS.md §2.1): the product's list endpoint and storefront page against
the ceiling (the same SQL with PostgreSQL building the JSON; static bytes) and a textbook DRF peer.

    python -m bench.catalogue [--scale 1.0] [--duration 3] [--rounds 3]

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/bench_catalogue; the
database is dropped and rebuilt) and `wrk` (apt-get install wrk). Prints one line per cell and variant,
then the ratios the targets are judged on (medians of interleaved rounds). Exits 0.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import time
from decimal import Decimal

from bench.harness import copy_rows, fresh_database, log, run_wrk, start_server

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_catalogue"
TARGETS = {"api_vs_sql": 0.7, "api_vs_peer": 1.5, "page_vs_sql": 0.5}


def build_data(scale: float, seed: int = 42) -> dict:
    """2k sites, 40 accelerator models, 600 providers, 100k offerings (20 % H100/A100 class), 5k model services."""
    from django.db import connection
    from django.utils.timezone import now

    from accounts import services as account_services
    from marketplace.core.regions import Region
    from marketplace.models import AcceleratorModel, ResidencyZone, SiteTier

    rng = random.Random(seed)
    moment = now()
    started = time.perf_counter()
    n_offerings, n_providers = int(100_000 * scale), max(10, int(600 * scale))
    n_sites, n_services = max(20, int(2000 * scale)), max(10, int(5000 * scale))

    copy_rows(
        "accounts_organization",
        ["created_at", "updated_at", "name", "slug", "is_personal"],
        ((moment, moment, f"Provider {i}", f"provider-{i}", False) for i in range(n_providers)),
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM accounts_organization ORDER BY id")
        provider_ids = [row[0] for row in cursor.fetchall()]
    copy_rows(
        "accounts_providerprofile",
        ["created_at", "updated_at", "organization_id", "legal_name", "contact_name", "contact_email", "contact_phone",
         "regions", "status", "review_note"],
        ((moment, moment, pid, f"Provider {pid} Ltd", "Ops", "ops@example.cn", "", json.dumps(["guizhou"]),
          "approved", "")
         for pid in provider_ids),
    )  # fmt: skip
    regions, tiers, zones = Region.values, SiteTier.values, ResidencyZone.values
    copy_rows(
        "marketplace_site",
        ["created_at", "updated_at", "name", "slug", "region", "tier", "residency_zone", "operator", "pue"],
        ((moment, moment, f"Site {i}", f"site-{i}", rng.choice(regions), rng.choice(tiers), rng.choice(zones),
          "China Telecom", Decimal("1.25")) for i in range(n_sites)),
    )  # fmt: skip
    peaks = ["tflops_fp64", "tflops_fp32", "tflops_tf32", "tflops_bf16", "tflops_fp16", "tflops_fp8", "tflops_int8"]
    copy_rows(
        "marketplace_acceleratormodel",
        ["created_at", "updated_at", "vendor", "name", "slug", "memory_gb", "memory_bandwidth_gbps", "interconnect",
         "is_domestic", *peaks, "datasheet_note"],
        ((moment, moment, rng.choice(["VendorX", "VendorY", "国产Z"]), f"Model {i}", f"synthetic-{i}",
          rng.choice([16, 24, 32, 48, 64, 96]), rng.choice([512, 900, 1600, 2000]), "PCIe", i % 2 == 0,
          *[Decimal(rng.randint(5, 800)) if rng.random() > 0.2 else None for _ in peaks], "synthetic")
         for i in range(29)),
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM marketplace_site")
        site_ids = [row[0] for row in cursor.fetchall()]
    accelerators = list(AcceleratorModel.objects.values_list("id", "slug"))
    popular = [i for i, slug in accelerators if slug in {"nvidia-h100-sxm", "nvidia-a100-80gb"}]
    others = [i for i, slug in accelerators if i not in popular]

    def offering_rows():
        for i in range(n_offerings):
            accelerator = rng.choice(popular) if rng.random() < 0.2 else rng.choice(others)
            price = Decimal(rng.randint(150, 2500)) / 100
            capacity = rng.randint(1, 64)
            yield (
                moment,
                moment,
                rng.choice(provider_ids),
                rng.choice(site_ids),
                accelerator,
                f"Offering {i}",
                "",
                rng.choice([1, 2, 4, 8, 8, 8]),
                64,
                512,
                4000,
                200,
                capacity,
                rng.randint(0, capacity),
                price,
                price / 2 if rng.random() < 0.5 else None,
                None,
                Decimal(15),
                None,
                1,
                None,
                "published" if rng.random() < 0.9 else "draft",
                moment,
                "{}",
                None,
            )

    copy_rows(
        "marketplace_offering",
        ["created_at", "updated_at", "provider_id", "site_id", "accelerator_id", "name", "description",
         "accelerators_per_node", "vcpu_per_node", "ram_gb_per_node", "disk_gb_per_node", "network_gbps",
         "capacity_nodes", "rented_nodes", "on_demand_price", "interruptible_price", "reserved_1w_discount_percent",
         "reserved_1m_discount_percent", "reserved_3m_discount_percent", "min_rental_hours", "max_rental_hours",
         "status", "published_at", "verified_tflops", "verified_at", "metering"],
        (row + ("lifecycle",) for row in offering_rows()),
    )  # fmt: skip
    copy_rows(
        "marketplace_modelservice",
        ["created_at", "updated_at", "provider_id", "name", "slug", "model_family", "description", "modality",
         "context_length", "max_output_tokens", "precision", "input_price_per_1k_tokens", "output_price_per_1k_tokens",
         "rate_limit_rpm", "rate_limit_tpm", "residency_zone", "upstream_base_url", "upstream_api_key", "status"],
        ((moment, moment, rng.choice(provider_ids), f"Model service {i}", f"ms-{i}",
          rng.choice(["qwen", "glm", "deepseek"]),
          "", rng.choice(["chat", "embeddings"]), rng.choice([4096, 32768, 131072]), 4096, "bf16",
          Decimal(rng.randint(1, 200)) / 10000, Decimal(rng.randint(1, 600)) / 10000, 600, 100000,
          rng.choice(zones), "http://127.0.0.1:9/v1", "sk-bench", "published") for i in range(n_services)),
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    buyer = account_services.user_sign_up(email="bench-buyer@example.cn", password="bench-pass-2026-x")
    organization = buyer.memberships.get().organization
    _key, secret = account_services.api_key_create(
        organization=organization, created_by=buyer, name="bench", scopes=["read"]
    )
    log(f"data: {n_offerings} offerings, {n_sites} sites, 40 accelerators, {n_providers} providers, "
        f"{n_services} model services built in {time.perf_counter() - started:.1f} s (COPY)")  # fmt: skip
    return {"secret": secret}


def query_counts(secret: str) -> dict[str, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench.cells import query_string

    client, counts = Client(HTTP_AUTHORIZATION=f"Bearer {secret}"), {}
    # warm-up: the first use of a key records last_used_at; the first facet validation loads the choices
    client.get(f"/api/v1/offerings/?{query_string('h100-east-p1-20', 1)}")
    for key in ("h100-east-p1-20", "h100-east-p1-100"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/api/v1/offerings/?{query_string(key, 1)}").status_code == 200
        counts[key] = len(queries.captured_queries)
    return counts


def explain(key: str) -> str:
    from django.db import connection

    from bench.cells import product_sql

    sql, params = product_sql(key, 1)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join("    " + row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 100k offerings (0.1 for a smoke run)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds after the warm-up")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--only", default="", help="run only the cells whose key contains this text")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    fresh_database(url)

    from bench.cells import CELLS, cell_page, query_string

    secret = build_data(args.scale)["secret"]
    counts = query_counts(secret)
    log(
        f"queries per API page: page_size 20 → {counts['h100-east-p1-20']}, "
        f"page_size 100 → {counts['h100-east-p1-100']}"
    )
    log("EXPLAIN h100-east page 1:\n" + explain("h100-east-p1-20"))

    server, port = start_server(url, args.workers)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {secret}"}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for key in [k for k in CELLS if args.only in k]:
            page = cell_page(key)
            query = query_string(key, page)
            variants = {
                "ceiling_sql": (f"{base}/bench/ceiling/sql/{key}?page={page}", {}),
                "ceiling_static": (f"{base}/bench/ceiling/static/{key}?page={page}", {}),
                "peer_drf": (f"{base}/bench/peer/offerings/?{query}", {}),
                "product_api": (f"{base}/api/v1/offerings/?{query}", auth),
            }
            if key.endswith("-20"):
                variants["product_page"] = (f"{base}/offerings/?{query}", {})
            for target, headers in variants.values():  # warm-up: caches, connections, lazy SQL
                run_wrk(target, 1, headers, server.pid)
            for _round in range(args.rounds):
                for name, (target, headers) in variants.items():
                    results.setdefault((key, name), []).append(run_wrk(target, args.duration, headers, server.pid))
            ceiling = statistics.median(r for r, _cpu in results[(key, "ceiling_sql")])
            for name in variants:
                rps = statistics.median(r for r, _cpu in results[(key, name)])
                cpu = statistics.median(c for _r, c in results[(key, name)])
                log(
                    f"{key:<20} p{page:<3} {name:<15} {rps:9.1f} rps  {cpu:6.2f} ms CPU/req  "
                    f"{rps / ceiling:5.2f} × C_sql"
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    def ratio(variant: str, versus: str, keys) -> float:
        return statistics.median(
            statistics.median(r for r, _c in results[(k, variant)])
            / statistics.median(r for r, _c in results[(k, versus)])
            for k in keys
        )

    keys = [k for k in CELLS if args.only in k]
    page_keys = [k for k in keys if k.endswith("-20")]
    figures = {
        "api_vs_sql": ratio("product_api", "ceiling_sql", keys),
        "api_vs_peer": ratio("product_api", "peer_drf", keys),
        "page_vs_sql": ratio("product_page", "ceiling_sql", page_keys),
    }
    for name, value in figures.items():
        verdict = "meets" if value >= TARGETS[name] else "MISSES"
        log(f"ratio {name:<12} {value:5.2f} (target ≥ {TARGETS[name]}: {verdict})")
    flat = counts["h100-east-p1-20"] == counts["h100-east-p1-100"] <= 4
    log(f"ratio query_count  page20={counts['h100-east-p1-20']} page100={counts['h100-east-p1-100']} "
        f"(target equal and ≤ 4: {'meets' if flat else 'MISSES'})")  # fmt: skip


if __name__ == "__main__":
    main()
