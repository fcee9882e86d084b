"""Password reset through allauth: a link by email, a new password, the old one dead."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import SecurityEvent, User

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "marble-orchard-compass-71"


def reset_link(mail_body: str) -> str:
    match = re.search(r"http://testserver(/accounts/password/reset/key/[^/\s]+/)", mail_body)
    assert match, mail_body
    return match.group(1)


def test_the_old_url_leads_to_the_reset_form(client: Client) -> None:
    response = client.get("/password-reset/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/"
    assert b'name="email"' in client.get("/accounts/password/reset/").content


def test_it_mails_a_reset_link_to_the_account(client: Client, owner: User, mailoutbox) -> None:
    response = client.post("/accounts/password/reset/", {"email": "owner@example.com"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/done/"
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["owner@example.com"]
    assert mail.subject == "DOS AI: Password Reset Email"
    reset_link(mail.body)


def set_new_password(client: Client, link: str):
    # allauth swaps the key for a session marker and redirects to the "set-password" URL.
    response = client.get(link, follow=True)
    assert response.status_code == 200
    form_url = response.redirect_chain[-1][0]
    return client.post(form_url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})


def test_the_link_in_the_mail_sets_a_new_password_that_signs_in(
    client: Client, owner: User, password: str, mailoutbox
) -> None:
    client.post("/accounts/password/reset/", {"email": "owner@example.com"})

    response = set_new_password(client, reset_link(mailoutbox[0].body))

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/key/done/"
    fresh = Client()
    response = fresh.post("/login/", {"login": "owner@example.com", "password": NEW_PASSWORD})
    assert response.status_code == 302
    assert int(fresh.session["_auth_user_id"]) == owner.pk
    assert not Client().login(username="owner@example.com", password=password)
    assert SecurityEvent.objects.filter(user=owner, kind="password_reset").count() == 1


def test_the_link_works_only_once(client: Client, owner: User, mailoutbox) -> None:
    client.post("/accounts/password/reset/", {"email": "owner@example.com"})
    link = reset_link(mailoutbox[0].body)
    set_new_password(client, link)

    response = Client().get(link, follow=True)

    assert response.status_code == 200
    assert response.context["token_fail"] is True


def test_the_new_password_must_pass_the_validators(client: Client, owner: User, mailoutbox) -> None:
    client.post("/accounts/password/reset/", {"email": "owner@example.com"})
    form_url = client.get(reset_link(mailoutbox[0].body), follow=True).redirect_chain[-1][0]

    response = client.post(form_url, {"password1": "password", "password2": "password"})

    assert response.status_code == 200
    assert "This password is too common." in response.context["form"].errors["password1"]


def test_an_unknown_email_gets_the_same_answer_and_no_mail(client: Client, mailoutbox) -> None:
    response = client.post("/accounts/password/reset/", {"email": "nobody@example.com"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/done/"
    assert mailoutbox == []


def test_the_library_pages_speak_in_sentence_case_and_say_why(client: Client, client_for, owner) -> None:
    reset = client.get("/accounts/password/reset/").content.decode()
    confirm = client_for(owner).get("/accounts/reauthenticate/").content.decode()

    assert "<h1>Reset your password</h1>" in reset
    assert ">Send the reset link</button>" in reset
    assert "<h1>Confirm it's you</h1>" in confirm.replace("&#x27;", "'")
    assert "need a recent sign-in, so that someone at an unlocked computer cannot do them" in confirm
    for stock in ("Password Reset", "Reset My Password", "Confirm Access", "Please reauthenticate", "contact us"):
        assert stock not in reset + confirm, stock
