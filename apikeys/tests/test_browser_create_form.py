"""The create form at 1280 and 390 px: its advanced panel as wide as the form (it was squeezed
into the name field's column), and the expiry date and the model boxes shown only while their
choice needs them. Screenshots in test-artifacts/keys-create-advanced-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from apikeys.tests.test_browser_key_settings import no_sideways_scroll, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 390])
def test_the_advanced_panel_is_as_wide_as_the_form_and_shows_only_what_applies(
    browser, live_server, artifacts_dir: Path, width: int
) -> None:
    from playwright.sync_api import expect

    context, page = signed_in(browser, live_server, width)
    page.goto(f"{live_server.url}/keys/")  # no key yet: the first-key form
    form = page.locator("#key-create-form")
    advanced = form.locator("details.key-advanced")
    advanced.locator("summary").click()

    form_box, panel_box = form.bounding_box(), advanced.bounding_box()
    assert abs(panel_box["width"] - form_box["width"]) <= 1, (panel_box, form_box)
    assert panel_box["x"] == pytest.approx(form_box["x"], abs=1)

    date_field = page.get_by_label("Expiry date (UTC)")
    model_boxes = form.locator('input[name="allowed_models"]')
    expect(date_field).to_be_hidden()  # "No expiry"
    expect(model_boxes.first).to_be_hidden()  # "All models"
    page.get_by_label("Expires").select_option("date")
    page.get_by_label("Only the models ticked below").check()
    expect(date_field).to_be_visible()
    expect(model_boxes.first).to_be_visible()
    no_sideways_scroll(page)
    page.screenshot(path=artifacts_dir / f"keys-create-advanced-{width}.png", full_page=True)
    context.close()
