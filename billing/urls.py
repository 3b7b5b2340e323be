from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("wallet/", views.wallet, name="wallet"),
    path("wallet/top-up/", views.wallet_top_up, name="wallet-top-up"),
    path("wallet/transactions.csv", views.transactions_csv, name="transactions-csv"),
    path("statements/", views.statement_list, name="statement-list"),
    path("statements/<int:pk>/", views.statement_detail, name="statement-detail"),
    path("statements/<int:pk>/csv/", views.statement_csv, name="statement-csv"),
    path("quotas/", views.quotas, name="quotas"),
    path("earnings/", views.earnings, name="earnings"),
    path("earnings/payouts/", views.payout_create, name="payout-create"),
    path("top-ups/<int:pk>/return/", views.top_up_return, name="top-up-return"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe-webhook"),
]
