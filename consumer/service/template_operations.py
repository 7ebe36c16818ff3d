"""What an operator can do with the message templates (admin API and CLI): read
them, add a version, preview one.

Versions are never changed or deleted: an edit is a new version, current from
the moment it commits, for every instance (dispatch reads the current versions
at each firing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from consumer.domain.limits import locale_problem
from consumer.domain.locales import canonical_locale
from consumer.domain.policy import Policy
from consumer.domain.template_text import (
    StoredTemplate,
    TemplateId,
    body_problem,
    render_body,
)
from consumer.domain.templates import date_locale_for, pick_template, sample_values
from consumer.service.ports import TemplateStore

__all__ = ["BadTemplate", "Preview", "TemplateOperations", "UnknownTemplate"]


class UnknownTemplate(LookupError):
    """No template has this id (the ids are the contract's, fixed in code)."""

    def __init__(self, template_id: str) -> None:
        known = ", ".join(t.value for t in TemplateId)
        super().__init__(f"no template {template_id!r} (templates: {known})")
        self.template_id = template_id


class BadTemplate(ValueError):
    """A body or locale that cannot be used; the message names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Preview:
    template_id: str
    locale: str  # of the text rendered
    version: int | None  # None: a body given to try, not stored
    body: str
    message: str


_IDS = frozenset(t.value for t in TemplateId)


def _known(template_id: str) -> str:
    if template_id not in _IDS:
        raise UnknownTemplate(template_id)
    return template_id


def _locale(locale: str) -> str:
    problem = locale_problem(locale)
    if problem is not None:
        raise BadTemplate("locale", problem)
    return canonical_locale(locale)


class TemplateOperations:
    def __init__(self, store: TemplateStore, policy: Policy, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock

    async def current(self) -> list[StoredTemplate]:
        """The current version of every template in every locale it has."""
        return await self.store.current_templates()

    async def versions(self, template_id: str) -> list[StoredTemplate]:
        """Every version of one template, by locale, newest first."""
        return await self.store.template_versions(_known(template_id))

    async def put(self, template_id: str, locale: str, body: str) -> tuple[StoredTemplate, bool]:
        """A new version in `locale` (the same body as the current one: no new
        version, that one); True when one was added."""
        template_id = _known(template_id)
        locale = _locale(locale)
        problem = body_problem(body)
        if problem is not None:
            raise BadTemplate("body", problem)
        return await self.store.put_template(template_id, locale, body, self.clock())

    async def preview(
        self,
        template_id: str,
        *,
        locale: str | None = None,
        body: str | None = None,
        event_date: date | None = None,
        booking_id: str | None = None,
        days_inactive: int | None = None,
        custom_message: str | None = None,
    ) -> Preview:
        """The message a user in `locale` (default: DEFAULT_LOCALE) would get now
        from the current version, or from `body` when given (nothing is stored);
        variables not given take sample values."""
        template_id = _known(template_id)
        wanted = _locale(locale) if locale is not None else self.policy.default_locale
        if body is not None:
            problem = body_problem(body)
            if problem is not None:
                raise BadTemplate("body", problem)
            template = StoredTemplate(template_id, wanted, 0, body)
        else:
            book = {(t.template_id, t.locale): t for t in await self.store.current_templates()}
            template = pick_template(book, template_id, wanted, self.policy.default_locale)
        values = sample_values(
            date_locale_for(template, wanted),
            event_date=event_date or self.clock().date(),
            booking_id=booking_id,
            days_inactive=days_inactive,
            custom_message=custom_message,
        )
        return Preview(
            template_id,
            template.locale,
            template.version if body is None else None,
            template.body,
            render_body(template.body, values),
        )
