from __future__ import annotations

from django.urls import path

from webhooks import views

urlpatterns = [
    path("", views.webhooks_page, name="webhooks"),
    path("<int:endpoint_id>/", views.endpoint_page, name="webhook_endpoint"),
    path("<int:endpoint_id>/roll-secret/", views.endpoint_roll_secret, name="webhook_roll_secret"),
    path("<int:endpoint_id>/test/", views.endpoint_test, name="webhook_test"),
    path("<int:endpoint_id>/enable/", views.endpoint_enable, name="webhook_enable"),
    path("<int:endpoint_id>/delete/", views.endpoint_delete, name="webhook_delete"),
    path(
        "<int:endpoint_id>/deliveries/<int:delivery_id>/send-again/",
        views.delivery_send_again,
        name="webhook_send_again",
    ),
]
