"""`{% highlight "python" %}…{% endhighlight %}`: code coloured on the server with Pygments.

The block is rendered as plain text first (autoescape off: Pygments escapes it, once), so
template variables such as the base URL or a new key are coloured with the code around them.
The output is classes only (`tok-*`, styled in app.css), never inline styles, which the
Content-Security-Policy refuses. Nothing is cached: a snippet may hold a raw API key.
"""

from __future__ import annotations

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name

register = template.Library()

FORMATTER = HtmlFormatter(nowrap=True, classprefix="tok-")


def highlight_code(source: str, language: str) -> SafeString:
    lexer = get_lexer_by_name(language, stripnl=False, ensurenl=False)
    # Pygments ends the last line with a newline the template did not write.
    return mark_safe(highlight(source, lexer, FORMATTER).removesuffix("\n"))  # noqa: S308 - Pygments escapes it


class HighlightNode(template.Node):
    def __init__(self, language: FilterExpression, nodelist: NodeList) -> None:
        self.language = language
        self.nodelist = nodelist

    def render(self, context: template.Context) -> str:
        autoescape = context.autoescape
        context.autoescape = False
        try:
            source = self.nodelist.render(context)
        finally:
            context.autoescape = autoescape
        return highlight_code(source, str(self.language.resolve(context)))


@register.tag("highlight")
def do_highlight(parser: Parser, token: Token) -> HighlightNode:
    bits = token.split_contents()
    if len(bits) != 2:
        raise template.TemplateSyntaxError(f"{bits[0]} takes one argument, the language")
    nodelist = parser.parse(("endhighlight",))
    parser.delete_first_token()
    return HighlightNode(parser.compile_filter(bits[1]), nodelist)
