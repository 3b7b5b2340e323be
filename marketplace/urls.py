from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from marketplace.views import applications, console, health, model_calls, nodes, rentals, storefront

storefront_patterns = (
    [
        path("", storefront.home, name="home"),
        path("offerings/", storefront.offering_list, name="offering-list"),
        path("offerings/compare/", storefront.offering_compare, name="offering-compare"),
        path("offerings/count/", storefront.offering_count, name="offering-count"),
        path("offerings/<int:pk>/", storefront.offering_detail, name="offering-detail"),
        path("offerings/<int:pk>/price/", storefront.offering_price_calculator, name="offering-price"),
        path("models/", storefront.model_service_list, name="model-service-list"),
        path("models/<int:pk>/", storefront.model_service_detail, name="model-service-detail"),
        path("apps/", applications.application_list, name="application-list"),
        path("apps/<slug:slug>/", applications.application_detail, name="application-detail"),
        path("apps/<slug:slug>/subscribe/", applications.application_subscribe, name="application-subscribe"),
        path("apps/<slug:slug>/review/", applications.application_review, name="application-review"),
        path("subscriptions/", applications.subscription_list, name="subscription-list"),
        path("subscriptions/<int:pk>/cancel/", applications.subscription_cancel, name="subscription-cancel"),
        path(
            "subscriptions/<int:pk>/accept-price/",
            applications.subscription_price_accept,
            name="subscription-price-accept",
        ),
        path("placement/", storefront.placement, name="placement"),
        path("estimator/", storefront.estimator, name="estimator"),
    ],
    "storefront",
)
console_patterns = (
    [
        path("", console.console_home, name="home"),
        path("offerings/new/", console.offering_edit, name="offering-create"),
        path("offerings/<int:pk>/", console.offering_edit, name="offering-edit"),
        path("offerings/<int:pk>/status/", console.offering_status, name="offering-status"),
        path("model-services/new/", console.model_service_edit, name="model-service-create"),
        path("model-services/<int:pk>/", console.model_service_edit, name="model-service-edit"),
        path("model-services/<int:pk>/status/", console.model_service_status, name="model-service-status"),
        path("rentals/", rentals.console_rentals, name="rental-list"),
        path("model-calls/", model_calls.console_model_calls, name="model-calls"),
        path("nodes/", nodes.node_list, name="nodes"),
        path("nodes/<int:pk>/", nodes.node_detail, name="node-detail"),
        path("nodes/<int:pk>/<slug:action>/", nodes.node_action, name="node-action"),
    ],
    "console",
)
seller_patterns = (
    [
        path("", applications.seller_home, name="home"),
        path("apps/new/", applications.seller_application_create, name="application-create"),
        path("apps/<int:pk>/", applications.seller_application, name="application"),
        path("apps/<int:pk>/versions/new/", applications.seller_version_create, name="version-create"),
        path("apps/<int:pk>/status/", applications.seller_application_status, name="application-status"),
    ],
    "seller",
)
rental_patterns = (
    [
        path("", rentals.rental_list, name="list"),
        path("order/<int:offering_pk>/", rentals.rental_order, name="order"),
        path("<int:pk>/", rentals.rental_detail, name="detail"),
        path("<int:pk>/live/", rentals.rental_live, name="live"),
        path("<int:pk>/jobs/", rentals.job_submit, name="job-submit"),
        path("<int:pk>/jobs/<int:job_pk>/", rentals.job_log, name="job"),
        path("<int:pk>/jobs/<int:job_pk>/cancel/", rentals.job_cancel, name="job-cancel"),
        path("<int:pk>/<slug:action>/", rentals.rental_action, name="action"),
        path("usage/", rentals.usage, name="usage"),
        path("usage.csv", rentals.usage_csv, name="usage-csv"),
        path("still-billing/", rentals.still_billing, name="still-billing"),
    ],
    "rentals",
)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("marketplace.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("billing/", include("billing.urls")),
    path("console/", include(console_patterns)),
    path("sell/", include(seller_patterns)),
    path("rentals/", include(rental_patterns)),
    path("model-usage/", model_calls.model_usage, name="model-usage"),
    path("model-usage.csv", model_calls.model_usage_csv, name="model-usage-csv"),
    path("", include(storefront_patterns)),
]

handler400 = "marketplace.views.errors.bad_request"
handler404 = "marketplace.views.errors.not_found"
handler500 = "marketplace.views.errors.server_error"
