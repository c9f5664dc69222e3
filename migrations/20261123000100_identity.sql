-- Identity: tenants, users, refresh tokens, invitations, API keys; and the two roles the server
-- uses. Roles are cluster-wide, so they are created only when missing (several databases, e.g.
-- the test databases, share them).

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'panels_app') then
        -- The role requests run as: owns nothing, cannot log in, cannot bypass row-level security.
        create role panels_app nologin nosuperuser nobypassrls noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'panels_auth') then
        -- Owner of the few security-definer functions that look identities up across tenants
        -- (login by e-mail, refresh token, API key) before a tenant is known.
        create role panels_auth nologin nosuperuser nobypassrls noinherit;
    end if;
exception
    -- Two databases migrating at once may both try to create a role.
    when duplicate_object or unique_violation then null;
end
$$;

-- The migrating role must be able to SET ROLE to the runtime role (no-op for a superuser).
do $$
begin
    execute format('grant panels_app to %I', current_user);
    execute format('grant panels_auth to %I', current_user);
exception when others then null;
end
$$;

grant usage on schema public to panels_app, panels_auth;
alter default privileges grant select, insert, update, delete on tables to panels_app;
alter default privileges grant usage, select on sequences to panels_app;

-- The tenant of the current transaction, as set by the server (null when none is set).
create or replace function app_tenant() returns text
    language sql stable parallel safe
    as $$ select nullif(current_setting('app.tenant', true), '') $$;

create table tenants (
    id          text primary key,
    name        text not null,
    created_at  timestamptz not null default now(),
    constraint tenants_id_format check (id ~ '^[A-Za-z0-9._~-]{1,128}$'),
    constraint tenants_name_length check (char_length(name) between 1 and 255)
);

create table users (
    id             bigint generated always as identity primary key,
    tenant_id      text not null references tenants (id) on delete cascade,
    email          text not null,
    name           text,
    password_hash  text not null,
    role           text not null,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    constraint users_tenant_email_key unique (tenant_id, email),
    constraint users_role_check check (role in ('admin', 'builder', 'user')),
    constraint users_email_lower check (email = lower(email)),
    -- (tenant_id, id) lets other tables reference a user inside one tenant.
    constraint users_tenant_id_key unique (tenant_id, id)
);
create index users_email_idx on users (email);

create table refresh_tokens (
    id          bigint generated always as identity primary key,
    tenant_id   text not null,
    user_id     bigint not null,
    family_id   uuid not null,
    token_hash  bytea not null,
    expires_at  timestamptz not null,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now(),
    constraint refresh_tokens_hash_key unique (token_hash),
    constraint refresh_tokens_user_fkey foreign key (tenant_id, user_id)
        references users (tenant_id, id) on delete cascade
);
create index refresh_tokens_family_idx on refresh_tokens (tenant_id, family_id);
create index refresh_tokens_user_idx on refresh_tokens (tenant_id, user_id);

-- Invitations and API keys name no foreign key to `tenants`: organisations of an external
-- identity provider use them too and are never registered here.
create table invitations (
    id           bigint generated always as identity primary key,
    tenant_id    text not null,
    email        text not null,
    role         text not null,
    token_hash   bytea not null,
    expires_at   timestamptz not null,
    accepted_at  timestamptz,
    created_by   bigint,
    created_at   timestamptz not null default now(),
    constraint invitations_hash_key unique (token_hash),
    constraint invitations_role_check check (role in ('admin', 'builder', 'user'))
);
create index invitations_tenant_idx on invitations (tenant_id);

create table api_keys (
    id            bigint generated always as identity primary key,
    tenant_id     text not null,
    name          text not null,
    prefix        text not null,
    key_digest    bytea not null,
    scope         text not null,
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    created_by    text not null,
    created_by_email text not null,
    created_at    timestamptz not null default now(),
    constraint api_keys_digest_key unique (key_digest),
    constraint api_keys_scope_check check (scope in ('read', 'write')),
    constraint api_keys_name_length check (char_length(name) between 1 and 255)
);
create index api_keys_tenant_idx on api_keys (tenant_id, id);

-- Row-level security: the second line behind every query's own tenant filter.
do $$
declare t text;
begin
    foreach t in array array['users', 'refresh_tokens', 'invitations', 'api_keys'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant_isolation on %I using (tenant_id = app_tenant()) with check (tenant_id = app_tenant())', t);
        execute format('create policy identity_lookup on %I for select to panels_auth using (true)', t);
        execute format('grant select on %I to panels_auth', t);
    end loop;
end
$$;
alter table tenants enable row level security;
alter table tenants force row level security;
create policy tenant_isolation on tenants using (id = app_tenant()) with check (id = app_tenant());
create policy identity_lookup on tenants for select to panels_auth using (true);
grant select on tenants to panels_auth;

-- Cross-tenant look-ups, each answering only what its caller needs.
create function auth_find_login(p_email text)
    returns table (id bigint, tenant_id text, email text, password_hash text, role text)
    language sql stable security definer set search_path = public
    as $$ select u.id, u.tenant_id, u.email, u.password_hash, u.role from users u where u.email = lower(p_email) order by u.id $$;

create function auth_find_refresh_token(p_hash bytea)
    returns table (id bigint, tenant_id text, user_id bigint, family_id uuid, expires_at timestamptz,
                   rotated_at timestamptz, revoked_at timestamptz, email text, role text)
    language sql stable security definer set search_path = public
    as $$ select r.id, r.tenant_id, r.user_id, r.family_id, r.expires_at, r.rotated_at, r.revoked_at, u.email, u.role
          from refresh_tokens r join users u on u.tenant_id = r.tenant_id and u.id = r.user_id
          where r.token_hash = p_hash $$;

create function auth_find_invitation(p_hash bytea)
    returns table (id bigint, tenant_id text, email text, role text, expires_at timestamptz, accepted_at timestamptz)
    language sql stable security definer set search_path = public
    as $$ select i.id, i.tenant_id, i.email, i.role, i.expires_at, i.accepted_at from invitations i where i.token_hash = p_hash $$;

create function auth_find_api_key(p_digest bytea)
    returns table (id bigint, tenant_id text, scope text, expires_at timestamptz, revoked_at timestamptz,
                   last_used_at timestamptz, created_by text, created_by_email text)
    language sql stable security definer set search_path = public
    as $$ select k.id, k.tenant_id, k.scope, k.expires_at, k.revoked_at, k.last_used_at, k.created_by, k.created_by_email
          from api_keys k where k.key_digest = p_digest $$;

do $$
declare f text;
begin
    foreach f in array array['auth_find_login(text)', 'auth_find_refresh_token(bytea)',
                             'auth_find_invitation(bytea)', 'auth_find_api_key(bytea)'] loop
        execute format('alter function %s owner to panels_auth', f);
        execute format('revoke all on function %s from public', f);
        execute format('grant execute on function %s to panels_app', f);
    end loop;
end
$$;

grant select, insert, update, delete on all tables in schema public to panels_app;
grant usage, select on all sequences in schema public to panels_app;
