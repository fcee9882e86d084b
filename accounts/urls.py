from __future__ import annotations

from allauth.account import views as allauth_views
from django.urls import include, path
from django.views.generic.base import RedirectView

from accounts import views
from accounts.throttle import LOGIN, PASSWORD_RESET, SIGNUP, throttle

signup = throttle(SIGNUP)(allauth_views.signup)
login = throttle(LOGIN)(allauth_views.login)
password_reset = throttle(PASSWORD_RESET)(allauth_views.password_reset)

urlpatterns = [
    path("signup/", signup, name="signup"),
    path("login/", login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("settings/", views.account_settings, name="settings"),
    path("settings/security/", views.security, name="security"),
    path("settings/security/sessions/<int:session_id>/end/", views.session_end, name="session_end"),
    path("settings/security/sessions/end-others/", views.sessions_end_others, name="sessions_end_others"),
    path("password-reset/", RedirectView.as_view(pattern_name="account_reset_password"), name="password_reset"),
    # allauth's own paths for these steps lead to ours: one throttled way in, at the stable URLs.
    path("accounts/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("accounts/signup/", RedirectView.as_view(pattern_name="signup", query_string=True)),
    path("accounts/logout/", RedirectView.as_view(pattern_name="settings")),
    path("accounts/password/reset/", password_reset, name="account_reset_password"),
    path("accounts/2fa/", RedirectView.as_view(pattern_name="security"), name="mfa_index"),
    path("accounts/sessions/", RedirectView.as_view(pattern_name="security"), name="usersessions_list"),
    path("accounts/", include("allauth.urls")),
    # Django's reverse() picks the last pattern of a name: allauth's links and redirects
    # (reverse("account_login")) therefore point at the stable URLs.
    path("signup/", signup, name="account_signup"),
    path("login/", login, name="account_login"),
    path("logout/", views.logout, name="account_logout"),
    path("accounts/password/reset/", password_reset, name="account_reset_password"),
    path("accounts/2fa/", RedirectView.as_view(pattern_name="security"), name="mfa_index"),
    path("accounts/sessions/", RedirectView.as_view(pattern_name="security"), name="usersessions_list"),
]
