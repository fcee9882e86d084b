from __future__ import annotations

from django import forms

from apikeys.services import NAME_MAX_LENGTH, clean_key_name


class ApiKeyCreateForm(forms.Form):
    # Validation lives in the service's clean_key_name, so the page, the admin and the
    # create_api_key command all refuse the same names with the same words.
    name = forms.CharField(
        label="Key name",
        required=False,
        strip=False,
        help_text="Something to tell your keys apart later, such as the app or environment using it.",
        widget=forms.TextInput(
            attrs={"maxlength": NAME_MAX_LENGTH, "placeholder": "e.g. Production backend", "autocomplete": "off"}
        ),
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("auto_id", "key-%s")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def clean_name(self) -> str:
        return clean_key_name(self.cleaned_data.get("name", ""))
