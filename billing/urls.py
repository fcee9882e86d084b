from __future__ import annotations

from django.urls import path

from billing import views

urlpatterns = [
    path("usage/", views.usage_page, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage_export"),
    path("billing/", views.billing_page, name="billing"),
    path("billing/ledger.csv", views.ledger_export, name="ledger_export"),
    path("settings/alerts/", views.alert_settings, name="alert_settings"),
]
