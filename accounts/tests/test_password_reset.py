from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "marble-orchard-compass-71"


def reset_link(mail_body: str) -> str:
    match = re.search(r"http://testserver(/reset/[^/\s]+/[^/\s]+/)", mail_body)
    assert match, mail_body
    return match.group(1)


def test_it_mails_a_reset_link_to_the_account(client: Client, owner: User, mailoutbox) -> None:
    response = client.post("/password-reset/", {"email": "owner@example.com"})

    assert response.status_code == 302
    assert response["Location"] == "/password-reset/sent/"
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["owner@example.com"]
    assert mail.subject == "Reset your DOS AI password"
    assert "owner@example.com" in mail.body
    reset_link(mail.body)


def test_the_link_in_the_mail_sets_a_new_password_that_signs_in(client: Client, owner: User, mailoutbox) -> None:
    client.post("/password-reset/", {"email": "owner@example.com"})
    link = reset_link(mailoutbox[0].body)

    # Django swaps the token for a session marker and redirects to the "set-password" URL.
    response = client.get(link, follow=True)
    assert response.status_code == 200
    assert response.context["validlink"] is True
    form_url = response.redirect_chain[-1][0]

    response = client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/reset/done/"

    assert Client().login(username="owner@example.com", password=NEW_PASSWORD)
    fresh = Client()
    response = fresh.post("/login/", {"username": "owner@example.com", "password": NEW_PASSWORD})
    assert response.status_code == 302
    assert int(fresh.session["_auth_user_id"]) == owner.pk


def test_the_old_password_stops_working_after_a_reset(client: Client, owner: User, password: str, mailoutbox) -> None:
    client.post("/password-reset/", {"email": "owner@example.com"})
    form_url = client.get(reset_link(mailoutbox[0].body), follow=True).redirect_chain[-1][0]
    client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    assert not Client().login(username="owner@example.com", password=password)


def test_the_link_works_only_once(client: Client, owner: User, mailoutbox) -> None:
    client.post("/password-reset/", {"email": "owner@example.com"})
    link = reset_link(mailoutbox[0].body)
    form_url = client.get(link, follow=True).redirect_chain[-1][0]
    client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    response = Client().get(link, follow=True)

    assert response.status_code == 200
    assert response.context["validlink"] is False
    assert b"This link has expired" in response.content


def test_the_new_password_must_pass_the_validators(client: Client, owner: User, mailoutbox) -> None:
    client.post("/password-reset/", {"email": "owner@example.com"})
    form_url = client.get(reset_link(mailoutbox[0].body), follow=True).redirect_chain[-1][0]

    response = client.post(form_url, {"new_password1": "password", "new_password2": "password"})

    assert response.status_code == 200
    assert "This password is too common." in response.context["form"].errors["new_password2"]


def test_an_unknown_email_gets_the_same_answer_and_no_mail(client: Client, mailoutbox) -> None:
    response = client.post("/password-reset/", {"email": "nobody@example.com"})

    assert response.status_code == 302
    assert response["Location"] == "/password-reset/sent/"
    assert mailoutbox == []
