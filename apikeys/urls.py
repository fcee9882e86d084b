from __future__ import annotations

from django.urls import path

from apikeys import settings_views, views

urlpatterns = [
    path("", views.keys_page, name="keys"),
    path("create/", views.key_create, name="key_create"),
    path("<int:key_id>/delete/", views.key_delete, name="key_delete"),
    path("<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("<int:key_id>/edit/", settings_views.key_edit, name="key_edit"),
    path("<int:key_id>/roll/", settings_views.key_roll, name="key_roll"),
    path("<int:key_id>/resume/", views.key_resume, name="key_resume"),
]
