from __future__ import annotations

from django.urls import path

from apikeys import views

urlpatterns = [
    path("", views.keys_page, name="keys"),
]
