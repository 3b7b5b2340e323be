"""Who may move an organization's money."""

from django.utils.translation import gettext as _

from accounts.models import Membership, Organization, User
from accounts.services import membership_require
from marketplace.core.errors import PermissionDenied


def billing_manager_require(*, user: User, organization: Organization) -> Membership:
    """Owners, admins and billing members may top up; other members only look. NotFound for outsiders."""
    membership = membership_require(user=user, organization=organization)
    if not membership.can_manage_billing:
        raise PermissionDenied(
            _("Only owners, admins and billing members can add funds."), code="role_required", role=membership.role
        )
    return membership
