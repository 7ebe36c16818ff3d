"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Released code of the previous version must keep working on this schema (rolling
upgrade): add first; drop or rename only in a later release. Say in the downgrade
what it loses.
"""

from __future__ import annotations

from alembic import op

revision = "${up_revision}"
down_revision = ${repr(down_revision).replace("'", '"')}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else 'op.execute("...")'}


def downgrade() -> None:
    """Drops ...: its first line says what going down loses (`migrate --to` shows it)."""
    ${downgrades if downgrades else 'op.execute("...")'}
