from __future__ import annotations

from django.urls import path

from billing import views

urlpatterns = [
    path("usage/", views.usage_page, name="usage"),
    path("billing/", views.billing_page, name="billing"),
]
