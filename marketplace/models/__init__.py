from marketplace.models.accelerators import AcceleratorKind, AcceleratorModel, Precision
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
from marketplace.models.nodes import (
    Job,
    JobLogChunk,
    JobStatus,
    Node,
    NodeAccelerator,
    NodeBenchmark,
    NodeStatus,
    NodeStatusChange,
    RentalNode,
)
from marketplace.models.offerings import Metering, Offering, OfferingPriceChange
from marketplace.models.rentals import Rental, RentalMode, RentalStatus, RentalTransition
from marketplace.models.sites import ResidencyZone, Site, SiteTier

__all__ = [
    "AcceleratorKind",
    "AcceleratorModel",
    "Application",
    "ApplicationCategory",
    "ApplicationReview",
    "ApplicationSubscription",
    "ApplicationUse",
    "ApplicationVersion",
    "GatewayPolicy",
    "Job",
    "JobLogChunk",
    "JobStatus",
    "Metering",
    "ModelCall",
    "ModelService",
    "Node",
    "NodeAccelerator",
    "NodeBenchmark",
    "NodeStatus",
    "NodeStatusChange",
    "Offering",
    "OfferingPriceChange",
    "Precision",
    "RateWindow",
    "Rental",
    "RentalMode",
    "RentalNode",
    "RentalStatus",
    "RentalTransition",
    "ResidencyZone",
    "Site",
    "SiteTier",
    "SubscriptionPayment",
]
