"""The environment that makes `python -m consumer ...` use exactly given settings."""

from __future__ import annotations

import os

from pydantic import SecretStr

from consumer.config import Settings


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment, except anything naming a setting, then every
    setting of `settings` (secrets revealed, booleans as `true`/`false`), then `extra`."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update(extra)
    return env
