from django.urls import include, path

urlpatterns = [path("", include("accounts.api.urls"))]
