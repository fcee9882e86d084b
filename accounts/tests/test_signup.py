"""Sign-up through allauth: a confirmation link first, then the account is signed in and credited."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
from billing.models import CreditAccount, LedgerEntry

pytestmark = pytest.mark.django_db

STRONG_PASSWORD = "violet-harbour-lantern-93"


def confirmation_link(mail_body: str) -> str:
    match = re.search(r"http://testserver(/accounts/confirm-email/[^/\s]+/)", mail_body)
    assert match, mail_body
    return match.group(1)


def comparable(html: bytes, email: str) -> str:
    """A page with its email and its (per-render) CSRF token blanked."""
    return re.sub(r'"x-csrftoken": "[^"]+"', "", html.decode().replace(email, "EMAIL"))


def sign_up(client: Client, email: str = "new@example.com", **extra: str):
    return client.post("/signup/", {"email": email, "password1": STRONG_PASSWORD, **extra})


def test_it_shows_the_signup_form(client: Client) -> None:
    response = client.get("/signup/")

    assert response.status_code == 200
    assert b'name="email"' in response.content
    assert b'name="password1"' in response.content
    assert b"Start with <strong>$5.00</strong> of free credit" in response.content


def test_it_asks_the_new_user_to_confirm_the_email_first(client: Client, mailoutbox) -> None:
    response = sign_up(client, "New.Person@Example.com")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    user = User.objects.get()
    assert user.email == "new.person@example.com"
    assert user.plan == "free"
    assert "_auth_user_id" not in client.session
    assert [mail.to for mail in mailoutbox] == [["new.person@example.com"]]
    assert mailoutbox[0].subject == "DOS AI: Please Confirm Your Email Address"
    page = client.get("/accounts/confirm-email/")
    assert b"<h1>Check your inbox</h1>" in page.content


def test_no_credit_until_the_email_is_confirmed(client: Client, mailoutbox) -> None:
    sign_up(client)

    user = User.objects.get(email="new@example.com")
    assert not LedgerEntry.objects.filter(user=user).exists()
    assert not CreditAccount.objects.filter(user=user).exists()


def test_the_link_signs_in_and_grants_the_starting_credit_once(client: Client, mailoutbox) -> None:
    sign_up(client)
    link = confirmation_link(mailoutbox[0].body)

    assert client.get(link).status_code == 200  # the page with the confirm button (no change on GET)
    response = client.post(link, follow=True)

    user = User.objects.get(email="new@example.com")
    assert response.redirect_chain[-1] == ("/", 302)
    assert response.templates[0].name == "overview.html"
    assert int(client.session["_auth_user_id"]) == user.pk
    entries = list(LedgerEntry.objects.filter(user=user).values_list("kind", "amount_micros", "balance_after_micros"))
    assert entries == [("grant", 5_000_000, 5_000_000)]

    # The same link again, or a second confirmation, never grants twice.
    Client().post(link)
    from accounts.services import account_email_verified

    account_email_verified(user=user)
    assert LedgerEntry.objects.filter(user=user).count() == 1
    assert CreditAccount.objects.get(user=user).balance_micros == 5_000_000


def test_signing_in_before_confirming_leads_back_to_check_your_inbox(client: Client, mailoutbox) -> None:
    sign_up(client)

    response = client.post("/login/", {"login": "new@example.com", "password": STRONG_PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert "_auth_user_id" not in client.session
    # A new link is mailed on sign-in, at most one every 3 minutes (allauth's cooldown).
    assert len(mailoutbox) == 1


def test_the_new_user_can_sign_in_with_the_chosen_password_once_confirmed(client: Client, mailoutbox) -> None:
    sign_up(client)
    client.post(confirmation_link(mailoutbox[0].body))

    fresh = Client()
    response = fresh.post("/login/", {"login": "new@example.com", "password": STRONG_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_an_existing_email_gets_the_same_answer_and_the_owner_gets_a_mail(
    client: Client, owner: User, mailoutbox
) -> None:
    new_page = Client().post("/signup/", {"email": "fresh@example.com", "password1": STRONG_PASSWORD}, follow=True)
    response = sign_up(client, "OWNER@example.com")
    page = client.get(response["Location"])

    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert comparable(page.content, "owner@example.com") == comparable(new_page.content, "fresh@example.com")
    assert User.objects.count() == 2
    assert "_auth_user_id" not in client.session
    assert [mail.to for mail in mailoutbox] == [["fresh@example.com"], ["owner@example.com"]]
    assert "already" in mailoutbox[1].body.lower()


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1!", "This password is too short. It must contain at least 8 characters."),
        ("password123", "This password is too common."),
        ("83920174651", "This password is entirely numeric."),
    ],
)
def test_it_refuses_a_weak_password(client: Client, password: str, message: str) -> None:
    response = client.post("/signup/", {"email": "weakling@example.com", "password1": password})

    assert response.status_code == 200
    assert message in response.context["form"].errors["password1"]
    assert not User.objects.exists()


def test_it_refuses_an_invalid_email(client: Client) -> None:
    response = client.post("/signup/", {"email": "not-an-email", "password1": STRONG_PASSWORD})

    assert response.status_code == 200
    assert response.context["form"].errors == {"email": ["Enter a valid email address."]}
    assert not User.objects.exists()


def test_it_shows_required_errors_for_an_empty_post(client: Client) -> None:
    response = client.post("/signup/", {})

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "email": ["This field is required."],
        "password1": ["This field is required."],
    }


def test_it_sends_a_signed_in_user_to_the_overview(client_for, owner: User) -> None:
    response = client_for(owner).get("/signup/")

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_the_confirmation_link_counts_as_a_fresh_sign_in_for_creating_a_key(client: Client, mailoutbox) -> None:
    sign_up(client)
    client.post(confirmation_link(mailoutbox[0].body))

    response = client.post("/keys/create/", {"name": "First"})

    assert response.status_code == 200
    assert User.objects.get(email="new@example.com").api_keys.count() == 1


def test_the_security_log_of_a_new_account_records_no_email_change(client: Client, mailoutbox) -> None:
    from accounts.models import SecurityEvent

    sign_up(client)
    client.post(confirmation_link(mailoutbox[0].body))

    user = User.objects.get(email="new@example.com")
    # Confirming the sign-up address is not a change of address (it was "Email changed · now …").
    kinds = list(SecurityEvent.objects.filter(user=user).order_by("id").values_list("kind", "detail"))
    assert kinds == [("email_verified", "new@example.com"), ("signed_in", "")]
    assert "Email changed" not in client.get("/settings/security/").content.decode()


def test_check_your_inbox_says_where_the_mail_went_in_development(client: Client, settings) -> None:
    settings.EMAIL_BACKEND = "dosportal.mail.EmailBackend"  # the default: printed on the console
    sign_up(client)

    page = client.get("/accounts/confirm-email/").content.decode()

    assert (
        "<strong>Development:</strong> no email is sent. The message, with its link, is printed in the "
        "terminal where <code>make run</code> runs (the console email backend)."
    ) in page
    assert "Look in your spam folder" not in page


def test_check_your_inbox_mentions_the_spam_folder_when_mail_is_sent(client: Client, mailoutbox) -> None:
    sign_up(client)

    page = client.get("/accounts/confirm-email/").content.decode()

    assert "Look in your spam folder" in page
    assert 'id="dev-mail-note"' not in page
