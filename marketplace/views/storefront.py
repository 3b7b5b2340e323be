from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from marketplace.core.regions import Region


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "marketplace/home.html", {"regions": Region.choices})
