"""The notification emails rendered from their templates: ``profile_billing/email/<kind>.txt``
(its ``subject`` block is the subject) and ``<kind>.html`` (an empty rendering sends text only),
found by the app's template loader, so a host's own ``templates/profile_billing/email/`` wins.
They call ``_pb`` and ``_pbn`` of the extension's translation domain, in the reader's locale.

What an email says (the user, the plan, the quota) is gathered by ``services.mail``, which sends
it; this module only words it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, Template

from ..domain.notifications import NotificationKind
from .translator import Translator

TEMPLATE_FOLDER = "profile_billing/email"
"""Where the email templates are: ``<kind>.txt`` and ``<kind>.html``."""


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None
    """None: text only."""


def render_email(
    environment: Environment,
    kind: NotificationKind,
    translator: Translator,
    variables: Mapping[str, Any],
) -> RenderedEmail:
    """The email of ``kind`` with ``variables``, in ``translator``'s language."""
    context = {"_pb": translator.gettext, "_pbn": translator.ngettext, "t": translator}
    context.update(variables)
    text_template = environment.get_template(f"{TEMPLATE_FOLDER}/{kind.value}.txt")
    subject, text = _subject_and_body(text_template, context)
    html = environment.get_template(f"{TEMPLATE_FOLDER}/{kind.value}.html").render(context)
    return RenderedEmail(subject=subject, text=text, html=html.strip() or None)


def _subject_and_body(template: Template, variables: Mapping[str, Any]) -> tuple[str, str]:
    """The ``subject`` block of a text template, on one line, and the rest of it: the template
    rendered with that block left out (where a standalone template has it inline)."""
    block = template.blocks.get("subject")
    subject = "" if block is None else "".join(block(template.new_context(dict(variables))))
    context = template.new_context(dict(variables))
    context.blocks["subject"] = [_nothing]
    body = "".join(template.root_render_func(context))
    return _one_line(subject), body.strip() + "\n"


def _nothing(context: Any) -> Iterator[str]:
    return iter(())


def _one_line(text: str) -> str:
    return " ".join(text.split())
