from django.urls import path
from rest_framework.routers import SimpleRouter

from billing.api import views

router = SimpleRouter()
router.register("transactions", views.TransactionViewSet, basename="transaction")
router.register("top-ups", views.TopUpViewSet, basename="top-up")
router.register("statements", views.StatementViewSet, basename="statement")
router.register("provider/payouts", views.ProviderPayoutViewSet, basename="provider-payout")

urlpatterns = [
    path("wallet/", views.WalletView.as_view(), name="wallet"),
    path("usage-events/", views.UsageEventView.as_view(), name="usage-events"),
    path("quotas/", views.QuotaView.as_view(), name="quotas"),
    path("provider/earnings/", views.ProviderEarningsView.as_view(), name="provider-earnings"),
    *router.urls,
]
