"""Reading rendered pages in tests."""

from __future__ import annotations

import html
import re

TAG = re.compile(r"<[^>]+>")


def text_of(markup: str) -> str:
    """The text a browser shows, roughly: tags removed, entities decoded (for coloured code)."""
    return html.unescape(TAG.sub("", markup))


def fragment_of(response, opening: str) -> str:
    """The markup of an htmx answer: a 200 whose body is a fragment starting with `opening`
    (white space before it aside), not a whole page."""
    assert response.status_code == 200, response.status_code
    content = response.content.decode()
    assert content.lstrip().startswith(opening), content[:200]
    return content


def sign_in_over_http(browser, email: str, password: str):
    """Post the sign-in form as a browser would (an httpx.Client on a live server, keeping its
    cookies): the form's page, then the answer to the post."""
    form = browser.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return form, browser.post("/login/", data={"csrfmiddlewaretoken": token, "login": email, "password": password})
