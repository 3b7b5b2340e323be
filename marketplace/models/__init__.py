from marketplace.models.accelerators import AcceleratorModel, Precision
from marketplace.models.model_services import ModelService
from marketplace.models.offerings import Metering, Offering, OfferingPriceChange
from marketplace.models.rentals import Rental, RentalMode, RentalStatus, RentalTransition
from marketplace.models.sites import ResidencyZone, Site, SiteTier

__all__ = [
    "AcceleratorModel",
    "Metering",
    "ModelService",
    "Offering",
    "OfferingPriceChange",
    "Precision",
    "Rental",
    "RentalMode",
    "RentalStatus",
    "RentalTransition",
    "ResidencyZone",
    "Site",
    "SiteTier",
]
