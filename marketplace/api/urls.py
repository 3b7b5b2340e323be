from django.urls import include, path
from rest_framework.routers import SimpleRouter

from marketplace.api import views

router = SimpleRouter()
router.register("sites", views.SiteViewSet, basename="site")
router.register("accelerators", views.AcceleratorViewSet, basename="accelerator")
router.register("offerings", views.OfferingViewSet, basename="offering")
router.register("model-services", views.ModelServiceViewSet, basename="model-service")
router.register("rentals", views.RentalViewSet, basename="rental")
router.register("model-calls", views.ModelCallViewSet, basename="model-call")
router.register("provider/model-calls", views.ProviderModelCallViewSet, basename="provider-model-call")
router.register("apps", views.ApplicationViewSet, basename="application")
router.register("app-subscriptions", views.ApplicationSubscriptionViewSet, basename="application-subscription")
router.register("seller/apps", views.SellerApplicationViewSet, basename="seller-application")
router.register("provider/offerings", views.ProviderOfferingViewSet, basename="provider-offering")
router.register("provider/model-services", views.ProviderModelServiceViewSet, basename="provider-model-service")

urlpatterns = [
    path("", include("accounts.api.urls")),
    path("", include("billing.api.urls")),
    path("placements/quote/", views.PlacementQuoteView.as_view(), name="placement-quote"),
    path("usage/", views.UsageView.as_view(), name="usage"),
    path("placements/estimate/", views.TrainingEstimateView.as_view(), name="placement-estimate"),
    *router.urls,
]
