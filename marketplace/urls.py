from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from marketplace.views import console, health, storefront

storefront_patterns = ([path("", storefront.home, name="home")], "storefront")
console_patterns = ([path("", console.console_home, name="home")], "console")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("marketplace.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("console/", include(console_patterns)),
    path("", include(storefront_patterns)),
]

handler404 = "marketplace.views.errors.not_found"
handler500 = "marketplace.views.errors.server_error"
