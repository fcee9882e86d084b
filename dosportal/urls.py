from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from dosportal import views

admin.site.site_header = "DOS AI administration"
admin.site.site_title = "DOS AI admin"
admin.site.index_title = "Portal administration"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("v1/", include("dosportal.v1.urls")),
    path("", include("accounts.urls")),
    path("keys/", include("apikeys.urls")),
    path("", include("billing.urls")),
]
