#!/usr/bin/env bash
# Runs once, when the compose PostgreSQL initialises its data directory: the login role the API
# serves requests as (DATABASE_APP_URL), a member of panels_app and nothing else. The migrations
# create panels_app too when it is missing; it is created here first so the grant can be made.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v pw="$PANELS_APP_PASSWORD" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'panels_app') then
        create role panels_app nologin nosuperuser nobypassrls noinherit;
    end if;
end $$;
select format('create role panels_login login inherit nosuperuser nobypassrls password %L', :'pw') \gexec
grant panels_app to panels_login;
SQL
