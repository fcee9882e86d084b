"""The project's form renderer: Django's own widget templates, and one field template of ours."""

from __future__ import annotations

from django.forms.renderers import TemplatesSetting


class FormRenderer(TemplatesSetting):
    """`{{ field.as_field_group }}` renders templates/forms/field.html everywhere, so label,
    errors and help have one markup on every page."""

    field_template_name = "forms/field.html"
