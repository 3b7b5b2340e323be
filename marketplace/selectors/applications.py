"""Reads of the app store: the storefront's published applications, and each seller's own with its sales."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Case, Count, DecimalField, ExpressionWrapper, F, Q, QuerySet, Value, When
from django.db.models.functions import TruncDate
from django.utils.timezone import get_current_timezone, localdate

from accounts.models import Organization
from billing.money import amount_sum, quantize_amount
from billing.services.statements import day_start
from marketplace.models import (
    Application,
    ApplicationReview,
    ApplicationSubscription,
    ModelCall,
    SubscriptionPayment,
)

ZERO = Decimal(0)
ORDERINGS = {
    "rating": ("-average_rating", "-rating_count", "-published_at"),
    "reviews": ("-rating_count", "-published_at"),
    "newest": ("-published_at",),
    "price": ("current_version__price", "-published_at"),
}


def application_storefront_list(*, query: str = "", category: str = "", ordering: str = "rating") -> QuerySet:
    """Published applications matching a search and a category, in the chosen order (best rated first by default;
    unrated ones last)."""
    applications = (
        Application.objects.filter(status=Application.Status.PUBLISHED)
        .select_related("seller", "current_version__model_service__provider")
        .annotate(
            average_rating=Case(
                When(rating_count=0, then=Value(0)),
                default=ExpressionWrapper(
                    F("rating_total") * Decimal("1.0") / F("rating_count"),
                    output_field=DecimalField(max_digits=6, decimal_places=3),
                ),
                output_field=DecimalField(max_digits=6, decimal_places=3),
            )
        )
    )
    if query:
        applications = applications.filter(
            Q(name__icontains=query) | Q(tagline__icontains=query) | Q(description__icontains=query)
        )
    if category:
        applications = applications.filter(category=category)
    return applications.order_by(*ORDERINGS.get(ordering, ORDERINGS["rating"]), "pk")


def application_get_published(*, slug: str) -> Application | None:
    return (
        Application.objects.filter(slug=slug, status=Application.Status.PUBLISHED)
        .select_related("seller", "current_version__model_service__provider")
        .first()
    )


def application_reviews(*, application: Application) -> QuerySet[ApplicationReview]:
    return application.reviews.select_related("organization", "author").order_by("-updated_at", "-pk")


def review_of(*, application: Application, organization: Organization) -> ApplicationReview | None:
    return ApplicationReview.objects.filter(application=application, organization=organization).first()


def subscription_open(*, application: Application, organization: Organization) -> ApplicationSubscription | None:
    """The organization's subscription to the application that is not ended, if any."""
    return (
        ApplicationSubscription.objects.filter(application=application, organization=organization)
        .exclude(status=ApplicationSubscription.Status.ENDED)
        .first()
    )


def subscription_list(*, organization: Organization) -> QuerySet[ApplicationSubscription]:
    return (
        ApplicationSubscription.objects.filter(organization=organization)
        .select_related("application__current_version", "version")
        .order_by("-created_at", "-pk")
    )


def subscription_spend(*, organization_id: int, start: datetime, end: datetime) -> Decimal:
    """What the organization paid for application subscriptions in [start, end)."""
    payments = SubscriptionPayment.objects.filter(
        organization_id=organization_id, created_at__gte=start, created_at__lt=end
    )
    return quantize_amount(payments.aggregate(total=amount_sum("amount", default=ZERO))["total"])


def seller_application_list(*, seller: Organization) -> QuerySet[Application]:
    return Application.objects.filter(seller=seller).select_related(
        "seller", "current_version__model_service__provider"
    )


def seller_application_get(*, seller: Organization, pk: int) -> Application | None:
    return seller_application_list(seller=seller).filter(pk=pk).first()


APPLICATION_EARNED = F("application_amount") - F("application_fee")


def seller_sales_by_application(*, seller: Organization, days: int = 30) -> dict[int, dict]:
    """Per application of the seller over the last `days` days: calls, subscription sales, what buyers paid for the
    application and what the seller earned (captured calls and paid periods, less the platform fee)."""
    since = day_start(localdate() - timedelta(days=days - 1))
    sales: dict[int, dict] = {}
    calls = (
        ModelCall.objects.filter(application__seller=seller, created_at__gte=since)
        .values("application_id")
        .annotate(
            calls=Count("pk"),
            paid=amount_sum("application_amount"),
            earned=amount_sum(APPLICATION_EARNED, filter=Q(application_fee__isnull=False)),
        )
    )
    for row in calls:
        sales[row["application_id"]] = {
            "calls": row["calls"], "subscriptions": 0, "paid": quantize_amount(row["paid"] or ZERO),
            "earned": quantize_amount(row["earned"] or ZERO),
        }  # fmt: skip
    payments = (
        SubscriptionPayment.objects.filter(subscription__application__seller=seller, created_at__gte=since)
        .values("subscription__application_id")
        .annotate(sold=Count("pk"), paid=amount_sum("amount"), earned=amount_sum(F("amount") - F("fee")))
    )
    for row in payments:
        entry = sales.setdefault(
            row["subscription__application_id"], {"calls": 0, "subscriptions": 0, "paid": ZERO, "earned": ZERO}
        )
        entry["subscriptions"] = row["sold"]
        entry["paid"] += quantize_amount(row["paid"])
        entry["earned"] += quantize_amount(row["earned"])
    return sales


def seller_earnings_by_day(
    *, seller: Organization, days: int = 30, application: Application | None = None
) -> list[tuple[date, int, Decimal]]:
    """(day, calls, earned) for each of the last `days` days: the seller's part of captured calls and of the
    subscription periods paid that day."""
    since = localdate() - timedelta(days=days - 1)
    calls = ModelCall.objects.filter(
        application__seller=seller, created_at__gte=day_start(since), application_fee__isnull=False
    )
    payments = SubscriptionPayment.objects.filter(
        subscription__application__seller=seller, created_at__gte=day_start(since)
    )
    if application is not None:
        calls = calls.filter(application=application)
        payments = payments.filter(subscription__application=application)
    zone = get_current_timezone()
    by_day: dict[date, list] = {}
    for row in (
        calls.annotate(day=TruncDate("created_at", tzinfo=zone))
        .values("day")
        .annotate(calls=Count("pk"), earned=amount_sum(APPLICATION_EARNED))
    ):
        by_day[row["day"]] = [row["calls"], quantize_amount(row["earned"])]
    for row in (
        payments.annotate(day=TruncDate("created_at", tzinfo=zone))
        .values("day")
        .annotate(earned=amount_sum(F("amount") - F("fee")))
    ):
        by_day.setdefault(row["day"], [0, ZERO])[1] += quantize_amount(row["earned"])
    listed = (since + timedelta(days=offset) for offset in range(days))
    return [(day, *by_day.get(day, (0, ZERO))) for day in listed]
