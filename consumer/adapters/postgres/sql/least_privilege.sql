-- The login role the service runs as: data access to its own tables, nothing more.
--
-- Usage (as the owner of the schema, after `followup-consumer migrate` created it):
--
--   psql "$ADMIN_URL" -v role=followups_app -v password="$APP_DB_PASSWORD" \
--        -f consumer/adapters/postgres/sql/least_privilege.sql
--
-- (or `-h HOST -p PORT -U postgres -d followups` instead of a URL). Both variables
-- are required. Safe to repeat: an existing role keeps its identity, gets LOGIN and
-- the given password (so a re-run rotates it), and its table privileges in schema
-- public are reset to exactly the list below. The role may own nothing, create
-- nothing and is refused if it is a superuser.
--
-- Intended deployment: a privileged migrator (the schema's owner) runs
-- `followup-consumer migrate`; the service runs as this role with
--   DATABASE_URL=postgresql+asyncpg://followups_app:PASSWORD@HOST:PORT/followups
-- Run this script again whenever a migration adds a table. The table alembic_version
-- (the schema's revision) stays the owner's: the role may not read it, and
-- `followup-consumer migrate` under the role is refused before it changes anything.

\set ON_ERROR_STOP on

\if :{?role}
\else
DO $$ BEGIN RAISE EXCEPTION 'psql variable "role" is not set: psql -v role=NAME -v password=SECRET -f least_privilege.sql'; END $$;
\endif
\if :{?password}
\else
DO $$ BEGIN RAISE EXCEPTION 'psql variable "password" is not set: psql -v role=NAME -v password=SECRET -f least_privilege.sql'; END $$;
\endif

BEGIN;

-- psql does not interpolate inside dollar quotes: hand the variables to the DO
-- blocks through transaction-local settings (gone at COMMIT).
SELECT set_config('followups.app_role', :'role', true) AS role,
       set_config('followups.app_password', :'password', true) <> '' AS password_set;

DO $$
DECLARE
    app      text := current_setting('followups.app_role');
    secret   text := current_setting('followups.app_password');
    is_super boolean;
BEGIN
    IF app = '' OR secret = '' THEN
        RAISE EXCEPTION 'role and password must not be empty';
    END IF;
    SELECT rolsuper INTO is_super FROM pg_roles WHERE rolname = app;
    IF NOT FOUND THEN
        BEGIN
            EXECUTE format(
                'CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                'NOBYPASSRLS NOINHERIT PASSWORD %L', app, secret);
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- created concurrently by another run
        END;
    ELSIF is_super THEN
        RAISE EXCEPTION 'role % is a superuser; choose another name', app;
    END IF;
    EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', app, secret);
END
$$;

-- Where it may connect, and see (not create) objects.
DO $$
DECLARE
    app text := current_setting('followups.app_role');
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), app);
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', app);
    EXECUTE format('REVOKE CREATE ON SCHEMA public FROM %I', app);
    -- PostgreSQL 15 and later already refuse PUBLIC the CREATE privilege on schema
    -- public; older servers grant it to everyone, which would let this role create
    -- tables, so it is taken away from PUBLIC as PostgreSQL 15 does.
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;

    -- Exactly the service's tables, data access only (no TRUNCATE, REFERENCES,
    -- TRIGGER), whatever the role was granted before.
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I', app);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %I', app);
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE '
        'public.scheduled_followups, public.user_projection, public.booking_projection, '
        'public.conversation_emotions, public.consumer_offsets, public.message_templates '
        'TO %I', app);
END
$$;

COMMIT;
