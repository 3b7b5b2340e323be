from accounts.selectors import membership_list_for_user


def organization(request) -> dict:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    active = request.organization
    return {
        "active_organization": active if active else None,
        "user_memberships": membership_list_for_user(user=request.user),
    }
