"""Demo data for the embedded run: users, providers, sites in every region and tier, offerings, model services.

Idempotent: everything is looked up by a natural key first, so a second run creates nothing.
"""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.timezone import now

from accounts import services as account_services
from accounts.models import Organization, ProviderProfile, User
from billing.selectors import top_up_list
from billing.services.topups import topup_test_credit, topup_test_mode
from marketplace.core.regions import Region
from marketplace.models import (
    AcceleratorModel,
    Application,
    Metering,
    ModelService,
    Node,
    Offering,
    Rental,
    ResidencyZone,
    Site,
    SiteTier,
)
from marketplace.services import applications as application_services
from marketplace.services import nodes as node_services
from marketplace.services import offerings as catalogue_services
from marketplace.services import rentals as rental_services

DEMO_PASSWORD = "demo-pass-2026"
DEMO_BUYER_CREDIT = Decimal("5000.00")  # a test-mode top-up, only where test-mode top-ups are allowed (DEBUG)
DEMO_USERS = {
    "buyer": ("buyer@demo.local", "演示买家 Demo Buyer"),
    "provider": ("provider@demo.local", "演示算力商 Demo Provider"),
    "staff": ("staff@demo.local", "平台运营 Platform Staff"),
    "provider-west": ("provider-west@demo.local", "西部云算 West Cloud"),
    "provider-edge": ("provider-edge@demo.local", "湾区边缘 Bay Edge"),
}
# key → (owner, organization, legal name, regions)
PROVIDERS = {
    "east": ("provider", "华东智算 East China AI Compute", "华东智算科技有限公司", ["yangtze-delta", "guizhou", "inner-mongolia"]),
    "west": ("provider-west", "西部云算 West Cloud", "西部云算数据服务有限公司", ["guizhou", "gansu", "ningxia", "cheng-yu"]),
    "edge": ("provider-edge", "湾区边缘 Bay Edge", "湾区边缘计算有限公司", ["greater-bay", "jing-jin-ji"]),
}  # fmt: skip
# slug, name, region, tier, zone, operator, PUE
SITES = [
    ("sh-lingang", "上海临港智算中心", Region.YANGTZE_DELTA, SiteTier.CENTRAL, ResidencyZone.CN_EAST, "中国电信", "1.25"),
    ("hf-regional", "合肥区域算力中心", Region.YANGTZE_DELTA, SiteTier.REGIONAL, ResidencyZone.CN_EAST, "中国移动", "1.30"),
    ("bj-yizhuang", "北京亦庄智算中心", Region.JING_JIN_JI, SiteTier.CENTRAL, ResidencyZone.CN_NORTH, "中国联通", "1.28"),
    ("bj-edge", "北京海淀边缘节点", Region.JING_JIN_JI, SiteTier.EDGE, ResidencyZone.CN_NORTH, "中国联通", None),
    ("sz-edge", "深圳南山边缘节点", Region.GREATER_BAY, SiteTier.EDGE, ResidencyZone.CN_SOUTH, "中国电信", None),
    ("hk-tko", "香港将军澳数据中心", Region.GREATER_BAY, SiteTier.CENTRAL, ResidencyZone.HONG_KONG, "HKT", "1.35"),
    ("cq-liangjiang", "重庆两江智算中心", Region.CHENG_YU, SiteTier.CENTRAL, ResidencyZone.CN_SOUTHWEST, "中国移动", "1.27"),
    ("cd-mobile", "成都移动算力车", Region.CHENG_YU, SiteTier.MOBILE, ResidencyZone.CN_SOUTHWEST, "中国铁塔", None),
    ("nm-ulanqab", "乌兰察布绿色算力中心", Region.INNER_MONGOLIA, SiteTier.REGIONAL, ResidencyZone.CN_NORTH, "中国电信", "1.15"),
    ("gz-guian", "贵安新区数据中心", Region.GUIZHOU, SiteTier.CENTRAL, ResidencyZone.CN_SOUTHWEST, "中国联通", "1.20"),
    ("gs-qingyang", "庆阳算力枢纽", Region.GANSU, SiteTier.REGIONAL, ResidencyZone.CN_WEST, "中国电信", "1.18"),
    ("nx-zhongwei", "中卫云计算基地", Region.NINGXIA, SiteTier.REGIONAL, ResidencyZone.CN_WEST, "中国移动", "1.16"),
]  # fmt: skip
# provider, site, accelerator, per node, vCPU, RAM GB, disk GB, Gb/s, nodes, on-demand, interruptible, reserved 1w/1m/3m %
OFFERINGS = [
    ("east", "sh-lingang", "nvidia-h100-sxm", 8, 192, 2048, 15360, 3200, 16, "18.50", "9.90", ("10", "20", "30")),
    ("east", "gz-guian", "nvidia-a100-80gb", 8, 128, 1024, 7680, 800, 24, "9.80", "5.20", ("8", "15", "25")),
    ("east", "nm-ulanqab", "nvidia-h20", 8, 128, 1024, 7680, 800, 40, "7.20", "3.90", (None, "15", "25")),
    ("east", "hf-regional", "cambricon-mlu370-x8", 8, 64, 512, 3840, 200, 12, "3.60", None, (None, "10", "20")),
    ("east", "sh-lingang", "hygon-dcu-z100", 8, 64, 512, 3840, 200, 10, "2.90", None, (None, None, "15")),
    ("west", "cq-liangjiang", "huawei-ascend-910b", 8, 192, 1536, 7680, 1600, 32, "8.00", "4.50", ("10", "18", "28")),
    ("west", "gz-guian", "huawei-ascend-910b", 8, 192, 1536, 7680, 1600, 20, "7.50", None, (None, "18", "28")),
    ("west", "gs-qingyang", "nvidia-a800-80gb", 8, 128, 1024, 7680, 800, 16, "8.50", "4.60", ("8", "15", "25")),
    ("west", "nx-zhongwei", "nvidia-l40s", 4, 64, 512, 3840, 200, 30, "4.20", "2.20", (None, "12", "20")),
    ("west", "cd-mobile", "nvidia-rtx-4090", 2, 32, 128, 2000, 25, 4, "2.80", None, (None, None, None)),
    ("edge", "sz-edge", "nvidia-rtx-4090", 4, 48, 256, 3840, 100, 20, "2.30", "1.20", (None, "10", None)),
    ("edge", "bj-yizhuang", "nvidia-h800-sxm", 8, 192, 2048, 15360, 3200, 12, "16.00", "8.80", ("10", "20", "30")),
    ("edge", "bj-edge", "kunlunxin-r200", 8, 64, 512, 3840, 200, 8, "2.60", None, (None, "10", None)),
    ("edge", "hk-tko", "nvidia-h100-sxm", 8, 192, 2048, 15360, 3200, 6, "21.00", None, ("5", "12", "20")),
]  # fmt: skip
# provider, slug, name, family, modality, context, max output, precision, in / out per 1K, zone
MODEL_SERVICES = [
    ("east", "qwen2-5-72b-instruct", "Qwen2.5 72B Instruct", "qwen2.5", "chat", 32768, 8192, "bf16", "0.004", "0.012", ResidencyZone.CN_EAST),
    ("east", "bge-m3", "BGE-M3 Embeddings", "bge", "embeddings", 8192, None, "fp16", "0.0005", "0.0005", ResidencyZone.CN_EAST),
    ("west", "deepseek-v3", "DeepSeek V3", "deepseek", "chat", 65536, 8192, "fp8", "0.002", "0.008", ResidencyZone.CN_SOUTHWEST),
    ("edge", "glm-4-9b-chat", "GLM-4 9B Chat", "glm-4", "chat", 131072, 4096, "bf16", "0.0006", "0.0006", ResidencyZone.CN_SOUTH),
]  # fmt: skip
# Applications the demo buyer sells on those services: slug, name, icon, category, provider/model, pricing, price,
# free trial calls, tagline, system prompt.
DEMO_APPLICATIONS = [
    ("contract-reviewer", "合同审阅助手", "⚖️", "knowledge", ("east", "qwen2-5-72b-instruct"), "per_call", "0.05", 5,
     "逐条找出合同里需要律师留意的条款", "你是一名资深法务。逐条指出合同中的风险条款，并给出修改建议。"),
    ("weekly-report", "周报生成器", "📝", "writing", ("west", "deepseek-v3"), "per_1k_tokens", "0.002", 10,
     "把零散的工作记录整理成一份周报", "把用户给出的工作记录整理成结构清晰的周报：本周完成、问题与风险、下周计划。"),
    ("english-tutor", "英语口语陪练", "🎓", "education", ("edge", "glm-4-9b-chat"), "subscription", "29.90", 20,
     "用英语聊天，顺手纠正你的语法", "You are a friendly English tutor. Reply in English and gently correct mistakes."),
]  # fmt: skip
# The demo buyer's rentals: site, accelerator, accelerators, hours ago it started, hours it ran (None: running).
# The running one is billed by the worker from the moment `make run` starts, like any rental.
DEMO_RENTALS = [
    ("cd-mobile", "nvidia-rtx-4090", 2, 30, 3),
    ("gz-guian", "nvidia-a100-80gb", 8, 6, 2),
    ("nx-zhongwei", "nvidia-l40s", 4, 1, None),
]
# The demo model server (`serve_demo_model`, which `make run` starts) answers here for every service above, so they
# are published: callable through the gateway at /v1/.
DEMO_UPSTREAM = "http://127.0.0.1:8001/v1"
# A CPU node whose agent `make run` starts on this machine: rent it and run jobs on it from the rental page.
DEMO_NODE_OFFERING = "CPU 演示节点 · 上海临港 (agent demo)"
DEMO_NODE_NAME = "demo-node-1"


class Command(BaseCommand):
    help = (
        "Load demo users, providers, sites, offerings, model services and applications (running it twice creates "
        "nothing new)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--node-token-file",
            help="give the demo node a new agent token and write it to this file (make run starts its agent with it)",
        )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            created = self._seed()
        self.stdout.write(self.style.SUCCESS(f"Demo data ready ({created} new objects)."))
        if options["node_token_file"]:
            self._write_node_token(Path(options["node_token_file"]))
        for key in ("buyer", "provider", "staff"):
            self.stdout.write(f"  {key:<9} {DEMO_USERS[key][0]:<22} password: {DEMO_PASSWORD}")

    def _seed(self) -> int:
        created = 0
        users = {}
        for key, (email, name) in DEMO_USERS.items():
            users[key] = User.objects.filter(email=email).first()
            if users[key] is None:
                users[key] = account_services.user_sign_up(email=email, password=DEMO_PASSWORD, full_name=name)
                created += 1
        buyer_organization = Organization.objects.filter(memberships__user=users["buyer"], is_personal=True).first()
        if topup_test_mode() and not top_up_list(organization=buyer_organization).exists():
            topup_test_credit(organization=buyer_organization, amount=DEMO_BUYER_CREDIT, created_by=users["buyer"])
            created += 1
        staff = users["staff"]
        if not staff.is_staff:
            staff.is_staff = staff.is_superuser = True
            staff.save(update_fields=["is_staff", "is_superuser"])

        providers = {}
        for key, (owner_key, org_name, legal_name, regions) in PROVIDERS.items():
            owner = users[owner_key]
            organization = Organization.objects.filter(name=org_name, memberships__user=owner).first()
            if organization is None:
                organization = account_services.organization_create(name=org_name, owner=owner)
                account_services.organization_activate(user=owner, organization=organization)
                created += 1
            if not ProviderProfile.objects.filter(organization=organization).exists():
                profile = account_services.provider_apply(
                    organization=organization, actor=owner, legal_name=legal_name, contact_name=owner.full_name,
                    contact_email=owner.email, regions=regions,
                )  # fmt: skip
                account_services.provider_approve(profile_id=profile.pk, reviewer=staff, note="Demo provider")
                created += 1
            providers[key] = (organization, owner)

        for slug, name, region, tier, zone, operator, pue in SITES:
            _site, new = Site.objects.get_or_create(
                slug=slug,
                defaults={"name": name, "region": region, "tier": tier, "residency_zone": zone, "operator": operator,
                          "pue": Decimal(pue) if pue else None},
            )  # fmt: skip
            created += new

        for (
            provider_key,
            site_slug,
            accelerator_slug,
            per_node,
            vcpu,
            ram,
            disk,
            net,
            nodes,
            price,
            spot,
            reserved,
        ) in OFFERINGS:
            organization, owner = providers[provider_key]
            accelerator = AcceleratorModel.objects.get(slug=accelerator_slug)
            site = Site.objects.get(slug=site_slug)
            name = f"{per_node}× {accelerator.name} · {site.name}"
            if Offering.objects.filter(provider=organization, name=name).exists():
                continue
            offering = catalogue_services.offering_create(
                provider=organization, actor=owner, site=site, accelerator=accelerator, name=name,
                description=f"{accelerator.vendor} {accelerator.name} × {per_node}, {accelerator.interconnect}.",
                accelerators_per_node=per_node, vcpu_per_node=vcpu, ram_gb_per_node=ram, disk_gb_per_node=disk,
                network_gbps=net, capacity_nodes=nodes, on_demand_price=Decimal(price),
                interruptible_price=Decimal(spot) if spot else None,
                reserved_1w_discount_percent=Decimal(reserved[0]) if reserved[0] else None,
                reserved_1m_discount_percent=Decimal(reserved[1]) if reserved[1] else None,
                reserved_3m_discount_percent=Decimal(reserved[2]) if reserved[2] else None,
            )  # fmt: skip
            catalogue_services.offering_set_status(offering_id=offering.pk, status="published", actor=owner)
            created += 1

        for (
            provider_key,
            slug,
            name,
            family,
            modality,
            context,
            max_out,
            precision,
            price_in,
            price_out,
            zone,
        ) in MODEL_SERVICES:
            organization, owner = providers[provider_key]
            if ModelService.objects.filter(provider=organization, slug=slug).exists():
                continue
            service = catalogue_services.model_service_create(
                provider=organization, actor=owner, name=name, slug=slug, model_family=family, modality=modality,
                context_length=context, max_output_tokens=max_out, precision=precision,
                input_price_per_1k_tokens=Decimal(price_in), output_price_per_1k_tokens=Decimal(price_out),
                rate_limit_rpm=600, rate_limit_tpm=1_000_000, residency_zone=zone, upstream_base_url=DEMO_UPSTREAM,
            )  # fmt: skip
            catalogue_services.model_service_set_status(model_service_id=service.pk, status="published", actor=owner)
            catalogue_services.model_service_alias_approve(model_service_id=service.pk, actor=staff)
            created += 1

        for slug, name, icon, category, (
            provider_key,
            model,
        ), pricing, price, trial, tagline, prompt in DEMO_APPLICATIONS:
            if Application.objects.filter(slug=slug).exists():
                continue
            application = application_services.application_create(
                seller=buyer_organization, user=users["buyer"], slug=slug,
                listing={"name": name, "icon": icon, "category": category, "tagline": tagline,
                         "description": f"{tagline}。{prompt}"},
                version={"model_service": ModelService.objects.get(provider=providers[provider_key][0], slug=model),
                         "system_prompt": prompt, "pricing": pricing, "price": Decimal(price),
                         "free_trial_calls": trial, "notes": "首个版本"},
            )  # fmt: skip
            application_services.application_status_set(application=application, user=users["buyer"],
                                                         status=Application.Status.PUBLISHED)  # fmt: skip
            created += 1

        if topup_test_mode() and not Rental.objects.filter(organization=buyer_organization).exists():
            created += self._seed_rentals(buyer_organization, users["buyer"])
        return created + self._seed_node(*providers["east"])

    def _seed_node(self, provider: Organization, owner: User) -> int:
        """The demo node's offering (CPU, billed by the agent's usage reports) and the node, awaiting its agent."""
        offering = Offering.objects.filter(provider=provider, name=DEMO_NODE_OFFERING).first()
        if offering is not None:
            return 0
        offering = catalogue_services.offering_create(
            provider=provider, actor=owner, site=Site.objects.get(slug="sh-lingang"),
            accelerator=AcceleratorModel.objects.get(slug="cpu-node"), name=DEMO_NODE_OFFERING,
            description="本机上的演示节点：make run 启动它的提供方代理。租用后可在租用页面运行命令。",
            accelerators_per_node=1, vcpu_per_node=1, ram_gb_per_node=1, disk_gb_per_node=10, network_gbps=1,
            capacity_nodes=0, on_demand_price=Decimal("1.80"), metering=Metering.REPORTED,
        )  # fmt: skip
        node_services.node_create(provider=provider, offering_id=offering.pk, name=DEMO_NODE_NAME, actor=owner)
        catalogue_services.offering_set_status(offering_id=offering.pk, status="published", actor=owner)
        return 2

    def _write_node_token(self, path: Path) -> None:
        node = Node.objects.select_related("provider").get(name=DEMO_NODE_NAME, offering__name=DEMO_NODE_OFFERING)
        owner = User.objects.get(email=DEMO_USERS["provider"][0])
        _node, token = node_services.node_token_rotate(provider=node.provider, node_id=node.pk, actor=owner)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(token)
        path.chmod(0o600)

    def _seed_rentals(self, organization: Organization, buyer: User) -> int:
        """A rental history through the real services (admission, provisioning, metering, stop) at past moments."""
        moment = now()
        for site_slug, accelerator_slug, accelerators, started_hours_ago, ran_hours in DEMO_RENTALS:
            offering = Offering.objects.get(site__slug=site_slug, accelerator__slug=accelerator_slug)
            start = moment - timedelta(hours=started_hours_ago)
            order = rental_services.RentalRequest(offering_id=offering.pk, accelerators=accelerators)
            rental = rental_services.rental_create(
                organization=organization, request=order, created_by=buyer, moment=start
            )
            rental_services.rental_provision(rental_id=rental.pk, moment=start)
            if ran_hours is None:
                rental_services.rental_settle(rental_id=rental.pk, moment=moment)
            else:
                rental_services.rental_stop(rental_id=rental.pk, actor=buyer, moment=start + timedelta(hours=ran_hours))
        return len(DEMO_RENTALS)
