"""Alembic's script directory: the schema's revisions (versions/) and the environment
that runs them (env.py) on the connection `consumer.adapters.postgres.schema` gives it."""
