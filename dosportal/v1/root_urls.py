"""The URLconf of the /v1 handler (dosportal.asgi): the API, and JSON 404s for every other path."""

from __future__ import annotations

from django.urls import include, path, re_path

from dosportal.v1 import views

urlpatterns = [
    path("v1/", include("dosportal.v1.urls")),
    re_path(r"", views.not_found),
]
