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
    path("provider/earnings/", views.ProviderEarningsView.as_view(), name="provider-earnings"),
    *router.urls,
]
