from __future__ import annotations

from django.urls import path, re_path

from dosportal.v1 import views

urlpatterns = [
    path("models", views.models),
    path("models/<path:model_id>", views.model_detail),
    path("chat/completions", views.chat_completions),
    path("completions", views.completions),
    path("embeddings", views.embeddings),
    path("responses", views.responses),
    path("responses/<path:response_id>", views.response_by_id),
    re_path(r"^.*$", views.not_found),
]
