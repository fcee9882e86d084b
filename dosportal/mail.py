"""The development email backend: Django's console backend, on standard error.

Commands print what scripts read on standard output (`create_api_key` prints the new key,
`KEY=$(manage.py create_api_key ...)`); a notice mailed by the same command must not land in
the middle of it.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.mail.backends.console import EmailBackend as ConsoleEmailBackend


class EmailBackend(ConsoleEmailBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream", sys.stderr)
        super().__init__(*args, **kwargs)
