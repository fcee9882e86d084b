"""A user-agent string as people name their browser: "Chrome on Linux", "Mobile Safari on iOS".

Parsed with ua-parser (uap-core's rules, shipped in the ua-parser-builtins wheel: nothing is
downloaded at run time), never by a hand-written parser. The raw string stays in the database
and in the page's tooltip; two sessions of one browser on two systems no longer look alike.
"""

from __future__ import annotations

import functools

from ua_parser import parse

UNKNOWN = "Unknown browser"


@functools.lru_cache(maxsize=1024)  # a page lists the same few strings many times
def browser_name(user_agent: str) -> str:
    """ "Chrome on Linux"; the browser alone when the system is unknown ("curl"); the raw
    string's first word for a client the rules do not know ("python-httpx"); UNKNOWN for none."""
    user_agent = (user_agent or "").strip()
    if not user_agent:
        return UNKNOWN
    result = parse(user_agent)
    browser = result.user_agent.family if result.user_agent and result.user_agent.family != "Other" else ""
    system = result.os.family if result.os and result.os.family != "Other" else ""
    if not browser:
        # Not a browser the rules know (an HTTP library, a script): its product token says most.
        browser = user_agent.split("/", 1)[0].split(" ", 1)[0][:40] or UNKNOWN
    return f"{browser} on {system}" if system else browser
