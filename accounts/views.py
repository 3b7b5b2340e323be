"""Account pages: form in, service call, redirect; selector out, template."""

import base64
import time

import qrcode
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_otp import login as otp_login
from qrcode.image.svg import SvgPathImage

from accounts import forms, selectors, services
from accounts.middleware import SESSION_ORGANIZATION_KEY
from accounts.models import Membership, ProviderProfile, User
from marketplace.core.errors import DomainError, RateLimited
from marketplace.core.redirects import safe_next


def _apply_language(response: HttpResponse, language: str) -> HttpResponse:
    if language:
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, language, samesite="Lax")
    return response


def _activate(request: HttpRequest, organization) -> None:
    services.organization_activate(user=request.user, organization=organization)
    request.session[SESSION_ORGANIZATION_KEY] = organization.pk


def signup(request: HttpRequest) -> HttpResponse:
    form = forms.SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_sign_up(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                full_name=form.cleaned_data["full_name"],
                preferred_language=translation.get_language() or "",
            )
        except DomainError as error:
            form.add_error("email", error.detail)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, _("Welcome! Your personal workspace is ready."))
            return redirect(safe_next(request, reverse("storefront:home")))
    return render(request, "accounts/signup.html", {"form": form, "next": request.GET.get("next", "")})


TWO_FACTOR_PENDING_KEY = "two_factor_pending"


def _sign_in(request: HttpRequest, user, *, device=None, backend: str | None = None) -> None:
    login(request, user, backend=backend)
    if device is not None:
        otp_login(request, device)


def _sign_in_page(request: HttpRequest, template: str, *, form, status: int, retry_after: int) -> HttpResponse:
    """A sign-in step's page; locked out (429), it says when to try again."""
    response = render(request, template, {"form": form, "next": request.GET.get("next", "")}, status=status)
    if status == 429:
        response["Retry-After"] = str(retry_after)
    return response


def login_view(request: HttpRequest) -> HttpResponse:
    """Password first (with the lockout); an account with a confirmed TOTP device then gives its code on the
    next page before it is signed in. The admin's login is this view too (marketplace.core.admin)."""
    form = forms.LoginForm(request.POST or None)
    status, retry_after = 200, 0
    if request.method == "POST" and form.is_valid():
        email, ip_address = form.cleaned_data["email"], request.META.get("REMOTE_ADDR", "")
        try:
            services.login_attempt_check(email=email, ip_address=ip_address)
        except RateLimited as error:
            form.add_error(None, error.detail)
            status, retry_after = 429, error.retry_after
        else:
            user = authenticate(request, email=email, password=form.cleaned_data["password"])
            if user is None:
                services.login_failure_record(email=email, ip_address=ip_address)
                # One answer for an unknown address and a wrong password: no account enumeration.
                form.add_error(None, _("The e-mail address or password is incorrect."))
            elif selectors.two_factor_device_get(user=user) is not None:
                # Not signed in yet, and the address's failure count stands until the code is right too.
                request.session[TWO_FACTOR_PENDING_KEY] = {
                    "user_id": user.pk, "backend": user.backend, "since": time.time(),
                }  # fmt: skip
                next_url = safe_next(request, reverse("storefront:home"))
                return redirect(f"{reverse('accounts:login-verify')}?{urlencode({'next': next_url})}")
            else:
                services.login_success_record(email=email, ip_address=ip_address)
                _sign_in(request, user)
                response = redirect(safe_next(request, reverse("storefront:home")))
                return _apply_language(response, user.preferred_language)
    return _sign_in_page(request, "accounts/login.html", form=form, status=status, retry_after=retry_after)


def _two_factor_pending_user(request: HttpRequest):
    """Whom the code is for: the user who just gave the right password, or a signed-in user whose session has
    not passed the second factor (staff on their way into the admin)."""
    pending = request.session.get(TWO_FACTOR_PENDING_KEY)
    if pending and time.time() - pending["since"] <= settings.TWO_FACTOR_PENDING_SECONDS:
        user = User.objects.filter(pk=pending["user_id"], is_active=True).first()
        if user is not None:
            return user, pending["backend"]
    if request.user.is_authenticated and not request.user.is_verified():
        return request.user, None
    return None, None


def login_verify(request: HttpRequest) -> HttpResponse:
    user, backend = _two_factor_pending_user(request)
    if user is None:
        return redirect(f"{reverse('accounts:login')}?{urlencode({'next': request.GET.get('next', '')})}")
    form = forms.TwoFactorCodeForm(request.POST or None)
    status, retry_after = 200, 0
    if request.method == "POST" and form.is_valid():
        ip_address = request.META.get("REMOTE_ADDR", "")
        try:
            # The sign-in lockout counts wrong codes too: a stolen password does not buy endless guesses.
            services.login_attempt_check(email=user.email, ip_address=ip_address)
            device = services.two_factor_verify(user=user, token=form.cleaned_data["token"])
        except RateLimited as error:
            form.add_error(None, error.detail)
            status, retry_after = 429, error.retry_after
        except DomainError as error:
            services.login_failure_record(email=user.email, ip_address=ip_address)
            form.add_error("token", error.detail)
        else:
            services.login_success_record(email=user.email, ip_address=ip_address)
            request.session.pop(TWO_FACTOR_PENDING_KEY, None)
            if request.user.is_authenticated and request.user.pk == user.pk:
                otp_login(request, device)
            else:
                _sign_in(request, user, device=device, backend=backend)
            response = redirect(safe_next(request, reverse("storefront:home")))
            return _apply_language(response, user.preferred_language)
    return _sign_in_page(request, "accounts/login_verify.html", form=form, status=status, retry_after=retry_after)


@login_required
def two_factor(request: HttpRequest) -> HttpResponse:
    """Turn two-factor sign-in on (scan the secret, confirm with a code) or off (with a code)."""
    user = request.user
    form = forms.TwoFactorCodeForm(request.POST or None)
    device = selectors.two_factor_device_get(user=user)
    if request.method == "POST" and form.is_valid():
        token = form.cleaned_data["token"]
        try:
            if device is None:
                device = services.two_factor_enrol_confirm(user=user, token=token)
                otp_login(request, device)  # the code just given is this session's second factor
                messages.success(request, _("Two-factor sign-in is on."))
                return redirect(safe_next(request, reverse("accounts:two-factor")))
            services.two_factor_disable(user=user, token=token)
        except DomainError as error:
            form.add_error("token", error.detail)
        else:
            messages.success(request, _("Two-factor sign-in is off."))
            return redirect("accounts:two-factor")
    context = {"form": form, "device": device, "next": request.GET.get("next", ""),
               "required": not selectors.two_factor_satisfied(user=user, verified=False)}  # fmt: skip
    if device is None:
        enrolling = services.two_factor_enrol_start(user=user)
        secret = base64.b32encode(enrolling.bin_key).decode()
        qr = qrcode.make(enrolling.config_url, image_factory=SvgPathImage)
        context |= {"secret": secret, "otpauth_uri": enrolling.config_url, "qr_svg": qr.to_string(encoding="unicode")}
    return render(request, "accounts/two_factor.html", context)


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = forms.ProfileForm(
        request.POST or None, initial={"full_name": user.full_name, "preferred_language": user.preferred_language}
    )
    if request.method == "POST" and form.is_valid():
        services.user_profile_update(user=user, **form.cleaned_data)
        messages.success(request, _("Profile saved."))
        return _apply_language(redirect("accounts:profile"), user.preferred_language)
    return render(request, "accounts/profile.html", {"form": form})


@login_required
def organization_list(request: HttpRequest) -> HttpResponse:
    form = forms.OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        organization = services.organization_create(name=form.cleaned_data["name"], owner=request.user)
        _activate(request, organization)
        messages.success(request, _("Organization “%(name)s” created.") % {"name": organization.name})
        return redirect("accounts:organization-detail", pk=organization.pk)
    memberships = selectors.membership_list_for_user(user=request.user)
    return render(request, "accounts/organization_list.html", {"form": form, "memberships": memberships})


@login_required
def organization_detail(request: HttpRequest, pk: int) -> HttpResponse:
    organization = get_object_or_404(selectors.organization_list(user=request.user), pk=pk)
    membership = services.membership_require(user=request.user, organization=organization)
    form = forms.InvitationForm(request.POST or None)
    invite_link = None
    if request.method == "POST" and form.is_valid():
        try:
            _invitation, token = services.invitation_create(
                organization=organization, invited_by=request.user, **form.cleaned_data
            )
        except DomainError as error:
            form.add_error(None, error.detail)
        else:
            invite_link = request.build_absolute_uri(reverse("accounts:invitation-accept", args=[token]))
            messages.success(request, _("Invitation sent to %(email)s.") % {"email": form.cleaned_data["email"]})
            form = forms.InvitationForm()
    context = {
        "organization": organization,
        "membership": membership,
        "members": selectors.membership_list(organization=organization),
        "invitations": selectors.invitation_list_pending(organization=organization),
        "form": form,
        "invite_link": invite_link,
        "roles": Membership.Role.choices,
    }
    return render(request, "accounts/organization_detail.html", context)


@login_required
@require_POST
def organization_switch(request: HttpRequest) -> HttpResponse:
    chosen = request.POST.get("organization", "")
    if not chosen.isdigit():
        raise Http404
    organization = get_object_or_404(selectors.organization_list(user=request.user), pk=int(chosen))
    _activate(request, organization)
    messages.info(request, _("Now working in %(name)s.") % {"name": organization.name})
    return redirect(safe_next(request, reverse("storefront:home")))


@login_required
@require_POST
def membership_remove(request: HttpRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(selectors.membership_list_visible_to(user=request.user), pk=pk)
    try:
        services.membership_remove(membership=membership, actor=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    if membership.user_id == request.user.pk:
        return redirect("accounts:organization-list")
    return redirect("accounts:organization-detail", pk=membership.organization_id)


@login_required
@require_POST
def membership_change_role(request: HttpRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(selectors.membership_list_visible_to(user=request.user), pk=pk)
    try:
        services.membership_change_role(membership=membership, role=request.POST.get("role", ""), actor=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, _("Role updated."))
    return redirect("accounts:organization-detail", pk=membership.organization_id)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = get_object_or_404(selectors.invitation_list_visible_to(user=request.user), pk=pk)
    try:
        services.invitation_revoke(invitation=invitation, actor=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    return redirect("accounts:organization-detail", pk=invitation.organization_id)


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    try:
        invitation = services.invitation_get_pending(token=token)
    except DomainError as error:
        return render(request, "accounts/invitation_accept.html", {"error": error.detail}, status=404)
    if request.method == "POST" and request.user.is_authenticated:
        try:
            membership = services.invitation_accept(token=token, user=request.user)
        except DomainError as error:
            return render(
                request,
                "accounts/invitation_accept.html",
                {"invitation": invitation, "error": error.detail},
                status=403,
            )
        _activate(request, membership.organization)
        messages.success(request, _("You joined %(name)s.") % {"name": membership.organization.name})
        return redirect("accounts:organization-detail", pk=membership.organization_id)
    return render(request, "accounts/invitation_accept.html", {"invitation": invitation})


@login_required
def provider_apply(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    profile = selectors.provider_profile_get(organization=organization)
    can_apply = profile is None or profile.status == ProviderProfile.Status.REJECTED
    form = forms.ProviderApplicationForm(request.POST or None, initial={"contact_email": request.user.email})
    if request.method == "POST" and can_apply and form.is_valid():
        try:
            profile = services.provider_apply(organization=organization, actor=request.user, **form.cleaned_data)
        except DomainError as error:
            form.add_error(None, error.detail)
        else:
            messages.success(request, _("Application submitted. Our staff will review it shortly."))
            return redirect("accounts:provider-apply")
    return render(request, "accounts/provider_apply.html", {"form": form, "profile": profile, "can_apply": can_apply})


@login_required
def api_key_list(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    form = forms.ApiKeyForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            api_key, secret = services.api_key_create(
                organization=organization,
                created_by=request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at(),
            )
        except DomainError as error:
            form.add_error(None, error.detail)
        else:
            created = {"api_key": api_key, "secret": secret}
            form = forms.ApiKeyForm()
    context = {"form": form, "created": created, "api_keys": selectors.api_key_list(organization=organization)}
    is_htmx = request.headers.get("HX-Request") == "true"
    template = "accounts/partials/_api_keys.html" if is_htmx else "accounts/api_key_list.html"
    return render(request, template, context)


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    api_key = get_object_or_404(selectors.api_key_list(organization=request.organization), pk=pk)
    try:
        services.api_key_revoke(api_key=api_key, actor=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, _("Key “%(name)s” revoked.") % {"name": api_key.name})
    return redirect("accounts:api-keys")
