"""Alembic's environment: runs the revisions on the connection that
`consumer.adapters.postgres.schema` hands over (config.attributes["connection"]),
inside its transaction and under its advisory lock. No URL, no offline (--sql)
mode: `followup-consumer migrate` is the way in (`alembic revision` needs none of it).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "the migrations run through `followup-consumer migrate` "
        "(consumer.adapters.postgres.schema), not the alembic command"
    )
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
