"""/report-leaked-key/: anyone who finds a key (a paste site, a log) can have it revoked.

No account is needed, so the form is throttled per client address (DOS_AI_LEAK_REPORT_RATE,
django-ratelimit like the sign-in forms) and answers the same whether the text held an active
key or not: a stranger learns nothing about which keys exist. Reports go through
apikeys.leaks, as GitHub's do: an active key is revoked, its owner mailed, the log written.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from accounts.security import SecurityContext
from accounts.throttle import Throttle, throttle
from apikeys.forms import LeakReportForm
from apikeys.leaks import LeakReport, leaked_keys_report

# No email field: counted per client address only.
LEAK_REPORT = Throttle("apikeys.leak_report", "", "DOS_AI_LEAK_REPORT_RATE", "DOS_AI_LEAK_REPORT_RATE")
REPORTER = "someone using the report form on this site"


@sensitive_post_parameters("text")  # an error report must not carry the key
@require_http_methods(["GET", "HEAD", "POST"])
@throttle(LEAK_REPORT)
def report_leaked_key(request: HttpRequest) -> HttpResponse:
    form = LeakReportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        leaked_keys_report(
            reports=[
                LeakReport(token, "dos_ai_api_key", form.cleaned_data["found_at"], "report form")
                for token in form.cleaned_data["text"]
            ],
            reporter=REPORTER,
            context=SecurityContext.from_request(request),
        )
        # Post/redirect/get: a reload does not send the report again, and the answer is one page.
        return redirect(reverse("report_leaked_key") + "?sent=1")
    sent = request.method != "POST" and request.GET.get("sent") == "1"
    return render(request, "apikeys/report_leaked_key.html", {"form": form, "sent": sent})
