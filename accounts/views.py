from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters

from accounts.forms import AccountPasswordChangeForm, EmailAuthenticationForm, ResetSetPasswordForm, SignupForm
from accounts.throttle import throttle
from billing.money import format_usd, usd_to_micros
from billing.plans import PLANS, PlanName


@sensitive_post_parameters("password")
@throttle("accounts.signup", "DOS_AI_SIGNUP_RATE")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("overview")
    form = SignupForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to DOS AI. Your account is ready — create an API key to start.")
        next_url = request.POST.get("next", "")
        if url_has_allowed_host_and_scheme(next_url, {request.get_host()}, require_https=request.is_secure()):
            return redirect(next_url)
        return redirect("overview")
    signup_credit_micros = usd_to_micros(settings.DOS_AI_SIGNUP_CREDIT_USD)
    context = {
        "form": form,
        "free_plan": PLANS[PlanName.FREE],
        "signup_credit": format_usd(signup_credit_micros) if signup_credit_micros else "",
    }
    return render(request, "accounts/signup.html", context)


@method_decorator(throttle("accounts.login", "DOS_AI_LOGIN_RATE"), name="dispatch")
class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    """POST only (Django refuses GET with 405), so a link or image cannot sign anyone out."""


@method_decorator(throttle("accounts.password_reset", "DOS_AI_PASSWORD_RESET_RATE"), name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    form_class = ResetSetPasswordForm
    success_url = reverse_lazy("password_reset_complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


@login_required
@sensitive_post_parameters()
def account_settings(request: HttpRequest) -> HttpResponse:
    form = AccountPasswordChangeForm(request.user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)
        messages.success(request, "Your password has been changed.")
        return redirect("settings")
    return render(request, "accounts/settings.html", {"form": form, "plans": PLANS.values()})
