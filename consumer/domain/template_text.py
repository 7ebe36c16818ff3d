"""A template's text: its placeholders, the check an edited body must pass, and
the renderer.

A body is literal text with `{variable}` placeholders (`{{` and `}}` for literal
braces), as Python's `str.format` reads it, but only the four variables of the
contract, without format specs, conversions, indexes or attributes: values are
data and never parsed as format strings, so no text can reach into the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from string import Formatter
from typing import Final

from consumer.domain.limits import MESSAGE_MAX_CHARS, bounded_text_problem


class TemplateId(StrEnum):
    POST_EVENT_HIGH = "post_event_high_emotion"
    POST_EVENT_NEUTRAL = "post_event_neutral_emotion"
    POST_EVENT_LOW = "post_event_low_emotion"
    REENGAGEMENT_GENERAL = "reengagement_general"
    REENGAGEMENT_PAST_CUSTOMER = "reengagement_past_customer"
    EMOTION_CHECK_IN = "emotion_check_in"
    CUSTOM = "custom"


VARIABLES: Final = ("event_date", "booking_id", "days_inactive", "custom_message")
TEMPLATE_MAX_CHARS: Final = MESSAGE_MAX_CHARS


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    """One version of one template in one locale (versions count from 1 per locale)."""

    template_id: str
    locale: str
    version: int
    body: str
    created_at: datetime | None = None

    def as_json(self) -> dict[str, object]:
        """What the admin API and `templates ... --json` show of it."""
        return {
            "template_id": self.template_id,
            "locale": self.locale,
            "version": self.version,
            "body": self.body,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


class TemplateError(ValueError):
    """A body that cannot be rendered: broken braces or a placeholder we do not fill."""


def placeholders(body: str) -> list[str]:
    """The placeholders of `body`, in order, each as written between its braces.

    Raises TemplateError for broken braces (a lone `{` or `}`)."""
    try:
        parsed = list(Formatter().parse(body))
    except ValueError as exc:
        raise TemplateError(
            f"broken braces: {exc} (write {{{{ or }}}} for a literal brace)"
        ) from exc
    out = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        written = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        out.append(written)
    return out


def body_problem(body: str) -> str | None:
    """Why an operator's body cannot be a template, naming the culprit, or None."""
    problem = bounded_text_problem(body, TEMPLATE_MAX_CHARS)
    if problem is not None:
        return problem
    try:
        found = placeholders(body)
    except TemplateError as exc:
        return str(exc)
    unknown = [p for p in found if p not in VARIABLES]
    if unknown:
        known = ", ".join(f"{{{v}}}" for v in VARIABLES)
        return f"unknown placeholder {{{unknown[0]}}} (known: {known})"
    return None


def render_body(body: str, values: Mapping[str, str]) -> str:
    """Fill the placeholders with `values`, which are inserted literally.

    Raises TemplateError for a body `body_problem` refuses."""
    try:
        parsed = list(Formatter().parse(body))
    except ValueError as exc:
        raise TemplateError(f"broken braces: {exc}") from exc
    out = []
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if spec or conversion or field not in values:
            raise TemplateError(f"unknown placeholder {{{field}}}")
        out.append(values[field])
    return "".join(out)
