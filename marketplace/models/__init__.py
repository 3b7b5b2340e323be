from marketplace.models.accelerators import AcceleratorModel, Precision
from marketplace.models.model_services import ModelService
from marketplace.models.offerings import Offering, OfferingPriceChange
from marketplace.models.sites import ResidencyZone, Site, SiteTier

__all__ = [
    "AcceleratorModel",
    "ModelService",
    "Offering",
    "OfferingPriceChange",
    "Precision",
    "ResidencyZone",
    "Site",
    "SiteTier",
]
