from __future__ import annotations

from django.urls import path, re_path

from dosportal.v1 import views

urlpatterns = [
    re_path(r"^.*$", views.not_found),
]
