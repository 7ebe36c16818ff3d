"""The local services of `scripts/services`, found by a CLI run from a checkout.

`scripts/services up` writes the environment it prints (`export NAME=value` lines)
to `.services/env` (`$SERVICES_DIR/env` when that is set). A setting that the
environment does not give is taken from there, so a second terminal needs no
`eval "$(scripts/services env)"`; one that it gives always wins. Outside a checkout
(an installed wheel, the container image) there is no such file: nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
_EXPORT = re.compile(r"^\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*?)\s*$")


def env_file(environ: Mapping[str, str], checkout: Path = CHECKOUT) -> Path | None:
    """Where `scripts/services up` of this checkout writes its environment; None
    when this code does not run from a checkout."""
    if not (checkout / "scripts" / "services").is_file():
        return None
    state = environ.get("SERVICES_DIR")
    return (Path(state) if state else checkout / ".services") / "env"


def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=value` (or `NAME=value`) lines; quotes around a value removed,
    anything else (comments, blank lines) ignored."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _EXPORT.match(line)
        if match is None:
            continue
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[match["name"]] = value
    return found


def missing_settings(
    environ: Mapping[str, str], exports: Mapping[str, str], settings: Iterable[str]
) -> dict[str, str]:
    """The exported values of those `settings` (field names) that the environment
    does not set, by field name: what to pass to `load_settings`."""
    given = {name.upper() for name in environ}
    wanted = {name.lower() for name in settings}
    return {
        name.lower(): value
        for name, value in exports.items()
        if name.lower() in wanted and name.upper() not in given
    }


def settings_from_services(
    environ: Mapping[str, str], settings: Iterable[str], checkout: Path = CHECKOUT
) -> dict[str, str]:
    """The settings `scripts/services up` recorded that the environment lacks."""
    path = env_file(environ, checkout)
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return missing_settings(environ, parse_exports(text), settings)
