from marketplace.models.accelerators import AcceleratorModel, Precision
from marketplace.models.applications import (
    Application,
    ApplicationCategory,
    ApplicationReview,
    ApplicationSubscription,
    ApplicationUse,
    ApplicationVersion,
    SubscriptionPayment,
)
from marketplace.models.gateway import GatewayPolicy, ModelCall, RateWindow
from marketplace.models.model_services import ModelService
from marketplace.models.offerings import Metering, Offering, OfferingPriceChange
from marketplace.models.rentals import Rental, RentalMode, RentalStatus, RentalTransition
from marketplace.models.sites import ResidencyZone, Site, SiteTier

__all__ = [
    "AcceleratorModel",
    "Application",
    "ApplicationCategory",
    "ApplicationReview",
    "ApplicationSubscription",
    "ApplicationUse",
    "ApplicationVersion",
    "GatewayPolicy",
    "Metering",
    "ModelCall",
    "ModelService",
    "Offering",
    "OfferingPriceChange",
    "Precision",
    "RateWindow",
    "Rental",
    "RentalMode",
    "RentalStatus",
    "RentalTransition",
    "ResidencyZone",
    "Site",
    "SiteTier",
    "SubscriptionPayment",
]
