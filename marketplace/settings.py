"""Settings for 算力商城, configured only from environment variables (listed in README.md).

The defaults run the whole platform embedded (SQLite, a SQLite-backed Celery broker, a file cache);
PostgreSQL, Redis or RabbitMQ take over by setting DATABASE_URL, CELERY_BROKER_URL and CACHE_URL.
"""

import os
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from celery.schedules import crontab
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# psycopg prepares a statement after this many runs of its text. Django turns preparing off altogether (for poolers
# that cannot keep prepared statements), which also ignores the statements the code asks to prepare
# (marketplace.core.queries.run_prepared: the admission's, planned longer than they run). So by default only those
# are prepared; the ORM's texts carry their values and seldom repeat. `?prepare_threshold=none` in DATABASE_URL
# turns preparing off (a pooler in transaction mode without prepared-statement support), a number on for all.
PREPARE_ONLY_WHEN_ASKED = 2**31 - 1


def _postgresql_options(options: dict[str, str]) -> dict:
    threshold = options.pop("prepare_threshold", str(PREPARE_ONLY_WHEN_ASKED))
    return options | {"prepare_threshold": None if threshold.lower() == "none" else int(threshold)}


def database_from_url(url: str) -> dict:
    """Turn `postgres://user:pass@host:port/name?opt=v` or `sqlite:///path` into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path or ":memory:",
            # SQLite serialises writers; wait for the lock instead of failing while the worker writes.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": _postgresql_options(dict(parse_qsl(parts.query))),
        }
    raise ValueError(f"Unsupported DATABASE_URL scheme: {parts.scheme!r}")


def cache_from_url(url: str) -> dict:
    if url.startswith(("redis://", "rediss://")):
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    if url.startswith("file://"):
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": url[len("file://") :]}
    if url.startswith("locmem://"):
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    raise ValueError(f"Unsupported CACHE_URL: {url!r}")


# The embedded broker needs no server: kombu's SQLAlchemy transport on a SQLite file.
EMBEDDED_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite'}"

# --- Core ---
DEBUG = env_bool("DJANGO_DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    # A random per-checkout key so the embedded default works; production sets SECRET_KEY (README).
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        _key_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()
# API key hashes are keyed with their own secret so that rotating SECRET_KEY does not invalidate keys.
API_KEY_HASH_SECRET = os.environ.get("API_KEY_HASH_SECRET", SECRET_KEY)
API_KEY_ENVIRONMENT = os.environ.get("API_KEY_ENVIRONMENT", "live")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "whitenoise.runserver_nostatic",
    "marketplace.apps.MarketplaceAdminConfig",  # django.contrib.admin with our site: one sign-in door, 2FA
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "accounts",
    "billing",
    "marketplace",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): this session passed the second factor
    "accounts.middleware.ActiveOrganizationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "marketplace.urls"
WSGI_APPLICATION = "marketplace.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "accounts.context_processors.organization",
            ],
        },
    },
]

# --- Database ---
DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (login throttling and worker heartbeats must be shared by every process) ---
CACHES = {"default": cache_from_url(os.environ.get("CACHE_URL", f"file://{VAR_DIR / 'cache'}"))}

# --- Accounts ---
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "storefront:home"
LOGOUT_REDIRECT_URL = "storefront:home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_LIMIT_PER_IP = env_int("LOGIN_FAILURE_LIMIT_PER_IP", 50)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 15 * 60)
INVITATION_TTL_DAYS = env_int("INVITATION_TTL_DAYS", 7)
# Two-factor sign-in (TOTP, django-otp): open to every user; staff must pass it before the admin opens unless this
# is off (off by default only under DJANGO_DEBUG, so that `make run`'s demo staff sign in with a password).
STAFF_REQUIRE_TWO_FACTOR = env_bool("STAFF_REQUIRE_TWO_FACTOR", not DEBUG)
TWO_FACTOR_PENDING_SECONDS = 300  # between the right password and the code
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "算力商城")

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "算力商城 <no-reply@localhost>")

# --- Internationalisation ---
LANGUAGE_CODE = os.environ.get("LANGUAGE_CODE", "zh-hans")
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

# --- Static files (vendor assets come from node_modules, installed from the npm registry at setup) ---
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/htmx", BASE_DIR / "node_modules/htmx.org/dist"),
    ("vendor/bootstrap", BASE_DIR / "node_modules/bootstrap/dist"),
    ("vendor/chartjs", BASE_DIR / "node_modules/chart.js/dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security (production values come from the environment; `check --deploy` passes with them) ---
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO") else None
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["marketplace.core.api.IsOrganizationMember"],
    "DEFAULT_FILTER_BACKENDS": [
        "marketplace.core.api.StrictFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "marketplace.core.api.StandardPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "marketplace.core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "算力商城 API",
    "DESCRIPTION": "Compute marketplace and model-as-a-service REST API. Authenticate with `Authorization: Bearer "
    'mk_live_…`. Every error has the shape `{"error": {"code", "message", "details"}}`.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "APPEND_COMPONENTS": {
        "securitySchemes": {"ApiKey": {"type": "http", "scheme": "bearer", "description": "mk_live_<id>_<secret>"}}
    },
    "SECURITY": [{"ApiKey": []}],
    "ENUM_NAME_OVERRIDES": {
        "RegionEnum": "marketplace.core.regions.Region",
        "AcceleratorPrecisionEnum": "marketplace.models.accelerators.Precision",
        "ServedPrecisionEnum": "marketplace.models.model_services.ModelService.ServedPrecision",
        "CatalogueStatusEnum": "marketplace.models.offerings.OfferingStatus",
        "MembershipRoleEnum": "accounts.models.Membership.Role",
        "RentalStatusEnum": "marketplace.models.rentals.RentalStatus",
        "RentalModeEnum": "marketplace.models.rentals.RentalMode",
        "NodeStatusEnum": "marketplace.models.nodes.NodeStatus",
        "JobStatusEnum": "marketplace.models.nodes.JobStatus",
        "JobEndStatusEnum": "marketplace.services.jobs.FINISH_STATUS_CHOICES",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "marketplace.core.api.schema_add_error_responses",
    ],
}
IDEMPOTENCY_KEY_TTL_HOURS = env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24)
# A request that holds a key longer than this is taken to have crashed; a retry may take the key over.
IDEMPOTENCY_LOCK_SECONDS = env_int("IDEMPOTENCY_LOCK_SECONDS", 120)

# --- Rentals, metering and quotas ---
# An on-demand or interruptible rental holds this many hours of its price ahead, topped up as it runs.
RENTAL_RUNWAY_HOURS = env_int("RENTAL_RUNWAY_HOURS", 1)
RENTAL_MAX_SCHEDULE_DAYS = env_int("RENTAL_MAX_SCHEDULE_DAYS", 30)
# A suspended rental keeps its nodes this long; a top-up within it resumes the rental, after it it completes.
RENTAL_RESUME_GRACE_MINUTES = env_int("RENTAL_RESUME_GRACE_MINUTES", 30)
# Compensation for a provider fault: this many hours at the rental's price, at most what it was charged.
RENTAL_FAILURE_CREDIT_HOURS = env_int("RENTAL_FAILURE_CREDIT_HOURS", 1)
# The metering tick: usage is rated, holds topped up and limits enforced this often (beat).
METERING_TICK_SECONDS = env_int("METERING_TICK_SECONDS", 60)
# Reported usage events whose period ended longer ago than this are rejected.
USAGE_EVENT_MAX_AGE_HOURS = env_int("USAGE_EVENT_MAX_AGE_HOURS", 72)
USAGE_EVENT_BATCH_MAX = env_int("USAGE_EVENT_BATCH_MAX", 1000)
# How far a reported period may reach past the start, a suspension or the end of the rental's running time (clocks).
USAGE_CLOCK_TOLERANCE_SECONDS = env_int("USAGE_CLOCK_TOLERANCE_SECONDS", 5)
# Defaults of every organization's quota (staff change them per organization in the admin).
QUOTA_DEFAULT_MAX_CONCURRENT_ACCELERATORS = env_int("QUOTA_DEFAULT_MAX_CONCURRENT_ACCELERATORS", 64)
_spend_cap = os.environ.get("QUOTA_DEFAULT_MONTHLY_SPEND_CAP", "")
QUOTA_DEFAULT_MONTHLY_SPEND_CAP = Decimal(_spend_cap) if _spend_cap else None  # empty: no cap
QUOTA_DEFAULT_ALERT_THRESHOLDS = [
    int(p) for p in os.environ.get("QUOTA_DEFAULT_ALERT_THRESHOLDS", "50,80,100").split(",") if p.strip()
]

# --- Provider nodes and their agent ---
NODE_HEARTBEAT_SECONDS = env_int("NODE_HEARTBEAT_SECONDS", 15)  # what agents are told to keep to
# A node whose agent has not been heard from for this long is offline: its rentals move or fail (beat).
NODE_OFFLINE_AFTER_SECONDS = env_int("NODE_OFFLINE_AFTER_SECONDS", 60)
NODE_SWEEP_SECONDS = env_int("NODE_SWEEP_SECONDS", 15)
# A benchmark below this share of the datasheet's dense peak, at any precision both have, holds the node for review.
NODE_BENCHMARK_MIN_RATIO = Decimal(os.environ.get("NODE_BENCHMARK_MIN_RATIO", "0.5"))
# The published rule for a node outage: the rental is credited this many times the price of the time lost.
NODE_OUTAGE_CREDIT_MULTIPLIER = Decimal(os.environ.get("NODE_OUTAGE_CREDIT_MULTIPLIER", "2"))
NODE_RELIABILITY_WINDOW_DAYS = env_int("NODE_RELIABILITY_WINDOW_DAYS", 30)
JOB_FILES_MAX_BYTES = env_int("JOB_FILES_MAX_BYTES", 1024 * 1024)  # a job's working files, decoded, in all
JOB_LOG_MAX_BYTES = env_int("JOB_LOG_MAX_BYTES", 10 * 1024 * 1024)  # output kept per job; the rest is dropped
JOB_DEFAULT_TIME_LIMIT_SECONDS = env_int("JOB_DEFAULT_TIME_LIMIT_SECONDS", 3600)
JOB_MAX_TIME_LIMIT_SECONDS = env_int("JOB_MAX_TIME_LIMIT_SECONDS", 7 * 24 * 3600)

# --- Model gateway (/v1/) ---
# Rate-limit counters and the funds calls may reserve live in Redis, shared by every web worker; without Redis
# (the embedded default) in the database.
_cache_url = os.environ.get("CACHE_URL", "")
GATEWAY_REDIS_URL = os.environ.get(
    "GATEWAY_REDIS_URL", _cache_url if _cache_url.startswith(("redis://", "rediss://")) else ""
)
GATEWAY_DEFAULT_REQUESTS_PER_MINUTE = env_int("GATEWAY_DEFAULT_REQUESTS_PER_MINUTE", 600)
GATEWAY_DEFAULT_TOKENS_PER_MINUTE = env_int("GATEWAY_DEFAULT_TOKENS_PER_MINUTE", 1_000_000)
# The organization's standing hold for calls grows by this much at a time (less if it cannot spend that much).
GATEWAY_HOLD_STEP = Decimal(os.environ.get("GATEWAY_HOLD_STEP", "20.00"))
# An organization's gateway hold goes back to its available funds after this long without a model call.
GATEWAY_HOLD_IDLE_SECONDS = env_int("GATEWAY_HOLD_IDLE_SECONDS", 1800)
# With Redis, the gateway recounts an organization's month spend from the database this often: spend elsewhere
# (rentals, subscriptions) that reaches the monthly cap stops model calls within it.
GATEWAY_SPEND_CAP_RECOUNT_SECONDS = env_int("GATEWAY_SPEND_CAP_RECOUNT_SECONDS", 5)
GATEWAY_CONNECT_TIMEOUT_SECONDS = float(os.environ.get("GATEWAY_CONNECT_TIMEOUT_SECONDS", "5"))
GATEWAY_READ_TIMEOUT_SECONDS = float(os.environ.get("GATEWAY_READ_TIMEOUT_SECONDS", "120"))
GATEWAY_MAX_CONNECTIONS = env_int("GATEWAY_MAX_CONNECTIONS", 1000)
# How long a web worker trusts what it read about keys, policies and services (a revoked key stops within this).
GATEWAY_DIRECTORY_SECONDS = env_int("GATEWAY_DIRECTORY_SECONDS", 10)
# Where callers reach the gateway, when it is served apart from the site (pages show it; try-it forms call it).
# Empty: this site's /v1.
GATEWAY_PUBLIC_URL = os.environ.get("GATEWAY_PUBLIC_URL", "").rstrip("/")
# How long a try-it token (what the site's try-it forms call the gateway with) stays valid.
GATEWAY_TRY_IT_SECONDS = env_int("GATEWAY_TRY_IT_SECONDS", 3600)
# A service whose upstream refused a connection is passed over by aliases for this long.
GATEWAY_UNHEALTHY_SECONDS = env_int("GATEWAY_UNHEALTHY_SECONDS", 30)
# An upstream's reported prompt tokens are billed up to this many times the gateway's own count of the prompt (and
# never past its byte bound); more is clamped, flagged on the call and counts against the service's health.
# A whole answer or a stream from an upstream is cut off past this size or this long after the call began.
GATEWAY_MAX_ANSWER_BYTES = env_int("GATEWAY_MAX_ANSWER_BYTES", 16 * 1024 * 1024)
GATEWAY_MAX_ANSWER_SECONDS = env_int("GATEWAY_MAX_ANSWER_SECONDS", 600)
GATEWAY_PROMPT_TOKENS_TOLERANCE = float(os.environ.get("GATEWAY_PROMPT_TOKENS_TOLERANCE", "2.0"))
GATEWAY_CAPTURE_SECONDS = env_int("GATEWAY_CAPTURE_SECONDS", 15)
# Networks (CIDRs, comma-separated) a model service's upstream may be in although they are not public: loopback,
# private, link-local and reserved addresses are refused otherwise, when the URL is written and when the gateway
# connects. Production names none; `make run` names its demo model server (127.0.0.1/32).
GATEWAY_UPSTREAM_ALLOWED_NETWORKS = env_list("GATEWAY_UPSTREAM_ALLOWED_NETWORKS", "")

# --- Celery ---
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", EMBEDDED_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # our tasks are idempotent, so redelivery after a crash is safe
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # with late acks, do not let one worker hoard tasks
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_DEFAULT_QUEUE = "marketplace"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Unacked tasks return to the queue after this; it must exceed the longest task. (The SQLAlchemy
    # transport hands every option to create_engine, so options are set per transport.)
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT * 2}
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # */1 * * * *  proves the worker and beat are alive; /healthz reports the last beat
    "health-check": {"task": "marketplace.health_check", "schedule": 60.0},
    # 17 * * * *  idempotency records are kept for IDEMPOTENCY_KEY_TTL_HOURS
    "idempotency-purge": {"task": "marketplace.idempotency_purge", "schedule": 3600.0},
    # */1 * * * *  holds past their expiry return their remainder to available funds
    "billing-hold-expiry": {"task": "billing.hold_expire_due", "schedule": 60.0},
    # 30 3 * * *  cached balances against the sum of their postings
    "billing-ledger-reconcile": {"task": "billing.ledger_reconcile", "schedule": crontab(hour=3, minute=30)},
    # */1 * * * *  meter running rentals, rate new usage, top up holds, enforce funds and quotas
    "metering-tick": {"task": "marketplace.metering_tick", "schedule": float(METERING_TICK_SECONDS)},
    # */1 * * * *  rate every rental's new usage in one run (reported usage above all)
    "billing-usage-rate": {"task": "billing.usage_rate", "schedule": float(METERING_TICK_SECONDS)},
    # */1 * * * *  start scheduled rentals that are due, complete those whose term ended
    "rental-lifecycle-tick": {"task": "marketplace.rental_lifecycle_tick", "schedule": 60.0},
    # every GATEWAY_CAPTURE_SECONDS: write buffered model calls and capture their costs in one transaction
    "gateway-calls-capture": {"task": "marketplace.model_calls_capture", "schedule": float(GATEWAY_CAPTURE_SECONDS)},
    # */5 * * * *  idle organizations' gateway holds go back to their available funds
    "gateway-holds-release-idle": {"task": "marketplace.gateway_holds_release_idle", "schedule": 300.0},
    # every NODE_SWEEP_SECONDS: nodes whose agent went quiet go offline; their rentals move to a free node or fail
    "nodes-sweep": {"task": "marketplace.nodes_sweep", "schedule": float(NODE_SWEEP_SECONDS)},
    # 7 * * * *  node-backed offerings' reliability (uptime over the window) for ranking
    "offerings-reliability-refresh": {
        "task": "marketplace.offerings_reliability_refresh",
        "schedule": crontab(minute=7),
    },
    # */5 * * * *  application subscriptions renew (or end) once their period is over; each period is paid once
    "application-subscriptions-renew": {"task": "marketplace.application_subscriptions_renew", "schedule": 300.0},
    # 0 2 1 * *  close last month's statements (a second trigger finds them closed)
    "billing-statement-close": {
        "task": "billing.statement_close_due",
        "schedule": crontab(day_of_month=1, hour=2, minute=0),
    },
}
HEALTH_WORKER_STALE_SECONDS = env_int("HEALTH_WORKER_STALE_SECONDS", 180)

# --- Stripe (used by the billing issue; without keys the platform runs in test mode) ---
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_PUBLISHABLE_KEY = os.environ.get("STRIPE_PUBLISHABLE_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")

# --- Money ---
PLATFORM_CURRENCY = os.environ.get("PLATFORM_CURRENCY", "CNY")
# The platform's share of every charge a provider earns; staff may set another per provider.
PLATFORM_FEE_PERCENT = Decimal(os.environ.get("PLATFORM_FEE_PERCENT", "10"))
TOPUP_MIN_AMOUNT = Decimal(os.environ.get("TOPUP_MIN_AMOUNT", "10.00"))
TOPUP_MAX_AMOUNT = Decimal(os.environ.get("TOPUP_MAX_AMOUNT", "50000.00"))
PAYOUT_MIN_AMOUNT = Decimal(os.environ.get("PAYOUT_MIN_AMOUNT", "100.00"))
# Manual payouts of at least this much need two different staff members to approve them.
PAYOUT_TWO_PERSON_THRESHOLD = Decimal(os.environ.get("PAYOUT_TWO_PERSON_THRESHOLD", "10000.00"))
# Top-ups without Stripe credit at once and are marked "test mode": only ever in DEBUG or when this says so.
BILLING_TEST_TOPUPS = env_bool("BILLING_TEST_TOPUPS", DEBUG)

# --- Logging: structured enough to grep; secrets never reach it ---
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "WARNING"},
    },
}

ADMIN_SITE_HEADER = _("算力商城 administration")
