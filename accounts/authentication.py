from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts.services import AuthenticationFailed, api_key_verify


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mk_live_<id>_<secret>`: the request acts for the key's organization."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _sep, raw_key = header.partition(" ")
        if keyword != self.keyword:
            return None
        raw_key = raw_key.strip()
        if not raw_key or " " in raw_key:
            raise exceptions.AuthenticationFailed(_("Malformed Authorization header."), code="invalid_api_key")
        try:
            api_key = api_key_verify(raw_key=raw_key)
        except AuthenticationFailed as error:
            raise exceptions.AuthenticationFailed(error.detail, code=error.code) from None
        request._request.organization = api_key.organization
        request._request.api_key = api_key
        return api_key.created_by, api_key

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "mk_live_<id>_<secret>"}
