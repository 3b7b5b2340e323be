import os
import subprocess
import sys

from django.conf import settings

PRODUCTION_ENVIRONMENT = {
    "DJANGO_DEBUG": "0",
    "SECRET_KEY": "k8Vq2-production-like-secret-that-is-long-and-random-0d9f8a7s6d5f4g3h2j1",
    "ALLOWED_HOSTS": "market.example.cn",
    "SECURE_SSL_REDIRECT": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "TRUST_X_FORWARDED_PROTO": "1",
}


def test_check_deploy_passes_with_production_settings():
    environment = {**os.environ, **PRODUCTION_ENVIRONMENT}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
