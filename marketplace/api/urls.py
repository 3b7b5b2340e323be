from django.urls import include, path
from rest_framework.routers import SimpleRouter

from marketplace.api import nodes, views

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
router.register("provider/nodes", nodes.ProviderNodeViewSet, basename="provider-node")
router.register("jobs", nodes.JobViewSet, basename="job")

# The provider agent's endpoints: a node token, never an API key.
agent_patterns = [
    path("register", nodes.AgentRegisterView.as_view(), name="agent-register"),
    path("heartbeat", nodes.AgentHeartbeatView.as_view(), name="agent-heartbeat"),
    path("benchmarks", nodes.AgentBenchmarkView.as_view(), name="agent-benchmarks"),
    path("usage-events", nodes.AgentUsageEventsView.as_view(), name="agent-usage-events"),
    path("jobs/claim", nodes.AgentJobClaimView.as_view(), name="agent-job-claim"),
    path("jobs/<int:pk>/start", nodes.AgentJobStartView.as_view(), name="agent-job-start"),
    path("jobs/<int:pk>/log", nodes.AgentJobLogView.as_view(), name="agent-job-log"),
    path("jobs/<int:pk>/finish", nodes.AgentJobFinishView.as_view(), name="agent-job-finish"),
]

urlpatterns = [
    path("", include("accounts.api.urls")),
    path("", include("billing.api.urls")),
    path("placements/quote/", views.PlacementQuoteView.as_view(), name="placement-quote"),
    path("usage/", views.UsageView.as_view(), name="usage"),
    path("placements/estimate/", views.TrainingEstimateView.as_view(), name="placement-estimate"),
    path("agent/", include(agent_patterns)),
    *router.urls,
]
