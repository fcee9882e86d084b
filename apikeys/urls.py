from __future__ import annotations

from django.urls import path

from apikeys import views

urlpatterns = [
    path("", views.keys_page, name="keys"),
    path("create/", views.key_create, name="key_create"),
    path("<int:key_id>/delete/", views.key_delete, name="key_delete"),
    path("<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
]
