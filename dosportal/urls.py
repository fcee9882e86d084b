from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from apikeys import hooks, report_views
from dosportal import metrics, views
from dosportal.v1 import views as v1_views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.view, name="metrics"),
    path("admin/", admin.site.urls),
    path("report-leaked-key/", report_views.report_leaked_key, name="report_leaked_key"),
    path("hooks/github/secret-scanning/", hooks.github_secret_scanning, name="github_secret_scanning"),
    path("v1/", include("dosportal.v1.urls")),
    re_path(r"^v1$", v1_views.not_found),
    path("", views.overview, name="overview"),
    path("", include("accounts.urls")),
    path("keys/", include("apikeys.urls")),
    path("", include("billing.urls")),
    path("settings/webhooks/", include("webhooks.urls")),
]

# A database that cannot be reached is a 503 page, not a 500 (dosportal.errors).
handler500 = "dosportal.errors.server_error"
