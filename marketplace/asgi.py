"""The ASGI entry point: /v1/ is the model gateway (its own async application), everything else is Django."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
django_application = get_asgi_application()

from marketplace.gateway.app import Gateway, with_django  # noqa: E402 - needs Django set up first

application = with_django(Gateway(), django_application)
