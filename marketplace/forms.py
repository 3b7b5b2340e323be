import base64
import shlex
from decimal import Decimal

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from marketplace.core.regions import Region
from marketplace.models import (
    AcceleratorModel,
    Application,
    ApplicationCategory,
    ApplicationVersion,
    Metering,
    ModelService,
    Offering,
    Precision,
    ResidencyZone,
    Site,
)
from marketplace.services.applications import VERSION_FIELDS
from marketplace.services.placement import PricingMode


class PriceCalculatorForm(forms.Form):
    accelerators = forms.IntegerField(label=_("Accelerators"), min_value=1, max_value=10000, initial=8)
    hours = forms.IntegerField(label=_("Hours"), min_value=1, max_value=24 * 365, initial=24)
    mode = forms.ChoiceField(label=_("Mode"))

    def __init__(self, *args, offering: Offering, **kwargs):
        super().__init__(*args, **kwargs)
        modes = [(PricingMode.ON_DEMAND, _("On demand"))]
        if offering.interruptible_price is not None:
            modes.append((PricingMode.INTERRUPTIBLE, _("Interruptible")))
        labels = {"1w": _("Reserved 1 week"), "1m": _("Reserved 1 month"), "3m": _("Reserved 3 months")}
        modes += [(f"reserved_{t}", labels[t]) for t, d in offering.reserved_discounts().items() if d is not None]
        self.fields["mode"].choices = modes
        self.fields["accelerators"].initial = offering.accelerators_per_node


class PlacementForm(forms.Form):
    accelerators = forms.IntegerField(label=_("Accelerators"), min_value=1, max_value=100000, initial=8)
    hours = forms.IntegerField(label=_("Hours"), min_value=1, max_value=24 * 365 * 3, initial=24)
    accelerator = forms.ModelChoiceField(
        label=_("Accelerator model"), queryset=AcceleratorModel.objects.order_by("vendor", "name"), required=False,
        to_field_name="slug", empty_label=_("Any"),
    )  # fmt: skip
    precision = forms.ChoiceField(label=_("Precision"), choices=Precision.choices, initial=Precision.BF16)
    min_tflops = forms.DecimalField(label=_("Peak TFLOPS at that precision, at least"), min_value=0, required=False)
    region = forms.ChoiceField(label=_("Region"), choices=[("", _("Any")), *Region.choices], required=False)
    residency_zone = forms.ChoiceField(
        label=_("Data-residency zone"), choices=[("", _("Any")), *ResidencyZone.choices], required=False
    )
    domestic_only = forms.BooleanField(label=_("Domestic (信创) only"), required=False)
    max_price_per_accelerator_hour = forms.DecimalField(
        label=_("Max price per accelerator-hour (CNY)"), min_value=0, required=False
    )
    interruptible_allowed = forms.BooleanField(label=_("Interruptible is fine"), required=False)


class EstimatorForm(forms.Form):
    parameters = forms.IntegerField(label=_("Model parameters"), min_value=1, initial=7_000_000_000)
    tokens = forms.IntegerField(label=_("Training tokens"), min_value=1, initial=2_000_000_000_000)
    precision = forms.ChoiceField(label=_("Precision"), choices=Precision.choices, initial=Precision.BF16)
    mfu = forms.DecimalField(
        label=_("Utilisation (MFU)"), min_value=Decimal("0.01"), max_value=Decimal("1"), initial=Decimal("0.4")
    )


class OfferingForm(forms.ModelForm):
    site = forms.ModelChoiceField(label=_("Site"), queryset=Site.objects.order_by("region", "name"))
    accelerator = forms.ModelChoiceField(
        label=_("Accelerator model"), queryset=AcceleratorModel.objects.order_by("vendor", "name")
    )
    metering = forms.ChoiceField(
        label=_("Metering"), choices=Metering.choices, initial=Metering.LIFECYCLE, required=False,
        help_text=_("Provider usage reports: rentals are billed for the accelerator-seconds your agents report."),
    )  # fmt: skip

    class Meta:
        model = Offering
        fields = [
            "name", "description", "site", "accelerator", "accelerators_per_node", "vcpu_per_node",
            "ram_gb_per_node", "disk_gb_per_node", "network_gbps", "capacity_nodes", "on_demand_price",
            "interruptible_price", "reserved_1w_discount_percent", "reserved_1m_discount_percent",
            "reserved_3m_discount_percent", "min_rental_hours", "max_rental_hours", "metering",
        ]  # fmt: skip
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        labels = {"vcpu_per_node": _("vCPU per node")}  # capfirst would print "VCPU"

    def clean_metering(self) -> str:
        return self.cleaned_data["metering"] or Metering.LIFECYCLE


class ModelServiceForm(forms.ModelForm):
    upstream_base_url = forms.URLField(label=_("Upstream base URL"), max_length=200, assume_scheme="https")
    upstream_api_key = forms.CharField(
        label=_("Upstream API key"),
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Stored for the gateway and never shown again. Leave blank to keep the current key."),
    )

    class Meta:
        model = ModelService
        fields = [
            "name", "slug", "model_family", "description", "modality", "context_length", "max_output_tokens",
            "precision", "input_price_per_1k_tokens", "output_price_per_1k_tokens", "rate_limit_rpm",
            "rate_limit_tpm", "residency_zone", "upstream_base_url", "upstream_api_key",
        ]  # fmt: skip
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class RentalOrderForm(PriceCalculatorForm):
    """The offering page's order form: the calculator's fields, an open end and an optional start time."""

    hours = forms.IntegerField(
        label=_("Hours"),
        min_value=1,
        max_value=24 * 365,
        required=False,
        help_text=_("Empty: on demand until you stop it."),
    )
    starts_at = forms.DateTimeField(
        label=_("Start"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text=_("Empty: now."),
    )


class ApplicationListingForm(forms.ModelForm):
    """What the storefront shows of an application; the slug only when it is made (callers name it)."""

    class Meta:
        model = Application
        fields = ["name", "slug", "icon", "tagline", "category", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            del self.fields["slug"]


class ApplicationVersionForm(forms.ModelForm):
    """What a version runs and costs."""

    model_service = forms.ModelChoiceField(
        label=_("Model service"),
        queryset=ModelService.objects.filter(
            status=ModelService.Status.PUBLISHED, modality=ModelService.Modality.CHAT
        ).select_related("provider"),
    )

    class Meta:
        model = ApplicationVersion
        fields = list(VERSION_FIELDS)
        widgets = {"system_prompt": forms.Textarea(attrs={"rows": 5}), "notes": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_service"].label_from_instance = lambda service: (
            f"{service.provider.slug}/{service.slug} · ¥{service.input_price_per_1k_tokens:.4f} / "
            f"¥{service.output_price_per_1k_tokens:.4f} {_('per 1K tokens')}"
        )


class ApplicationReviewForm(forms.Form):
    stars = forms.TypedChoiceField(
        label=_("Stars"), coerce=int, choices=[(n, "★" * n) for n in range(5, 0, -1)], widget=forms.RadioSelect
    )
    text = forms.CharField(label=_("Review"), max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class ApplicationSearchForm(forms.Form):
    q = forms.CharField(label=_("Search"), required=False, max_length=100)
    category = forms.ChoiceField(
        label=_("Category"), required=False, choices=[("", _("All categories")), *ApplicationCategory.choices]
    )
    sort = forms.ChoiceField(
        label=_("Sort"),
        required=False,
        choices=[("rating", _("Best rated")), ("reviews", _("Most reviewed")), ("newest", _("Newest")),
                 ("price", _("Lowest price"))],
    )  # fmt: skip


class NodeForm(forms.Form):
    """A node for one of the provider's offerings; its agent's token is shown once it is made."""

    offering = forms.ModelChoiceField(queryset=None, label=_("Offering"))
    name = forms.CharField(max_length=100, label=_("Name"), help_text=_("e.g. the host name or its rack position"))

    def __init__(self, *args, offerings, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["offering"].queryset = offerings


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (Django's documented pattern): cleans to a list."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list:
        if isinstance(data, list | tuple):
            return [super(MultipleFileField, self).clean(item, initial) for item in data]
        return [super().clean(data, initial)] if data else []


class JobForm(forms.Form):
    """A job as a person types it: a command line (split as a POSIX shell would, but run without one)."""

    command = forms.CharField(
        max_length=10_000, label=_("Command"), widget=forms.TextInput(attrs={"class": "font-monospace"}),
        help_text=_('Run without a shell, e.g. python -c "print(42)"'),
    )  # fmt: skip
    environment = forms.CharField(
        required=False, label=_("Environment variables"), widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("One NAME=value per line"),
    )  # fmt: skip
    time_limit_minutes = forms.IntegerField(min_value=1, initial=60, label=_("Time limit (minutes)"))
    files = MultipleFileField(
        required=False, label=_("Working files"), help_text=_("Put in the job's directory; 1 MiB in all by default")
    )

    def clean_files(self) -> dict[str, str]:
        """name → base64 content, as the API takes them; the total is checked before anything is read."""
        uploads = self.cleaned_data["files"]
        if sum(upload.size for upload in uploads) > settings.JOB_FILES_MAX_BYTES:
            message = _("Working files may hold at most %(n)d bytes in all.") % {"n": settings.JOB_FILES_MAX_BYTES}
            raise forms.ValidationError(message)
        return {upload.name: base64.b64encode(upload.read()).decode() for upload in uploads}

    def clean_command(self) -> list[str]:
        try:
            argv = shlex.split(self.cleaned_data["command"])
        except ValueError as error:
            raise forms.ValidationError(_("The command cannot be read: %(e)s.") % {"e": error}) from None
        if not argv:
            raise forms.ValidationError(_("Type a command."))
        return argv

    def clean_environment(self) -> dict[str, str]:
        environment = {}
        for line in self.cleaned_data["environment"].splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise forms.ValidationError(_("Write each variable as NAME=value."))
            environment[name.strip()] = value
        return environment
