from __future__ import annotations

from django import forms

from webhooks.events import EVENT_TYPES
from webhooks.models import DESCRIPTION_MAX_LENGTH, URL_MAX_LENGTH


class EndpointForm(forms.Form):
    url = forms.CharField(
        label="Endpoint URL",
        max_length=URL_MAX_LENGTH,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/webhooks/dos-ai", "autocomplete": "off"}),
        error_messages={"required": "Give the URL that should receive the events."},
    )
    description = forms.CharField(
        label="Description", max_length=DESCRIPTION_MAX_LENGTH, required=False, help_text="Optional: what it is for."
    )
    event_types = forms.MultipleChoiceField(
        label="Events",
        choices=list(EVENT_TYPES.items()),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one event."},
    )

    def clean_url(self) -> str:
        return self.cleaned_data["url"].strip()
