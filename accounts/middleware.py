from django.utils.functional import SimpleLazyObject

from accounts.selectors import organization_get_active

SESSION_ORGANIZATION_KEY = "organization_id"


class ActiveOrganizationMiddleware:
    """Sets `request.organization` for browser sessions; API key authentication overrides it per request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        def resolve():
            if not request.user.is_authenticated:
                return None
            return organization_get_active(
                user=request.user, organization_id=request.session.get(SESSION_ORGANIZATION_KEY)
            )

        request.organization = SimpleLazyObject(resolve)
        request.api_key = None
        return self.get_response(request)
