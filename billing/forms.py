from django import forms
from django.utils.translation import gettext_lazy as _


class RefundForm(forms.Form):
    amount = forms.DecimalField(label=_("Amount to refund"), max_digits=14, decimal_places=2, min_value=0.01)
    reason = forms.CharField(label=_("Reason"), max_length=255)


class CreditLineForm(forms.Form):
    limit = forms.DecimalField(label=_("Credit line"), max_digits=14, decimal_places=2, min_value=0)
    reason = forms.CharField(label=_("Reason"), max_length=255, required=False)
