-- Security round 2 (docs/security.md): tenants the server has seen, principals' last known
-- roles, revoked access tokens, the absolute lifetime of a login, API keys bound to their
-- creator, and functions that no longer trust a tenant argument.

-- Every tenant the server has seen holds its slug in `tenants`, whatever made it: a registration,
-- a verified token of an identity provider, data written before this migration, or
-- `panels create-admin`. Registration inserts into `tenants` and so cannot take one over.
alter table tenants add column origin text not null default 'registered';
alter table tenants add constraint tenants_origin_check
    check (origin in ('registered', 'token', 'data', 'admin'));

-- The tenants that already hold data but were never registered (an identity provider's). Row-level
-- security is forced even for the owner, which therefore lifts it for the backfill only.
do $$
declare t text;
begin
    foreach t in array array['tenants', 'users', 'invitations', 'api_keys', 'panel',
                             'access_control_lists', 'idempotency_key'] loop
        execute format('alter table %I no force row level security', t);
    end loop;
    insert into tenants (id, name, origin)
    select distinct s.tenant_id, s.tenant_id, 'data'
      from (select tenant_id from users
            union select tenant_id from invitations
            union select tenant_id from api_keys
            union select tenant_id from panel
            union select tenant_id from access_control_lists) s
     where s.tenant_id ~ '^[A-Za-z0-9._~-]{1,128}$'
    on conflict (id) do nothing;
    foreach t in array array['tenants', 'users', 'invitations', 'api_keys', 'panel',
                             'access_control_lists', 'idempotency_key'] loop
        execute format('alter table %I force row level security', t);
    end loop;
end
$$;

-- The principals of verified tokens: the last role each one was seen with. An API key created by
-- a member of an identity provider lives only as long as that member is seen with a role that
-- covers what the key does (local users are read from `users` instead).
create table principal_seen (
    tenant_id     text not null,
    subject       text not null,
    email         text not null,
    role          text not null,
    last_seen_at  timestamptz not null default now(),
    constraint principal_seen_pkey primary key (tenant_id, subject),
    constraint principal_seen_role_check check (role in ('admin', 'builder', 'user'))
);

-- API keys: whether the creator is a local user (an id of `users`) or an identity provider's
-- member (a subject of `principal_seen`).
alter table api_keys add column creator_kind text not null default 'external';
alter table api_keys add constraint api_keys_creator_kind_check check (creator_kind in ('user', 'external'));
do $$
begin
    alter table api_keys no force row level security;
    alter table users no force row level security;
    update api_keys k set creator_kind = 'user'
     where k.created_by ~ '^[0-9]{1,18}$'
       and exists (select 1 from users u where u.tenant_id = k.tenant_id and u.id = k.created_by::bigint);
    alter table api_keys force row level security;
    alter table users force row level security;
end
$$;

-- Access tokens revoked before their expiry (logout), by SHA-256 of the token, until they expire.
-- Every instance reads the new entries every second (auth_revoked_tokens_since).
create table revoked_token (
    tenant_id     text not null,
    token_digest  bytea not null,
    expires_at    timestamptz not null,
    revoked_at    timestamptz not null default clock_timestamp(),
    constraint revoked_token_pkey primary key (tenant_id, token_digest)
);
create index revoked_token_revoked_idx on revoked_token (revoked_at);

-- A login's refresh tokens share the moment the login happened: rotation never extends it past
-- JWT_REFRESH_MAX_AGE.
alter table refresh_tokens add column family_started_at timestamptz;
do $$
begin
    alter table refresh_tokens no force row level security;
    update refresh_tokens r set family_started_at = f.started
      from (select tenant_id, family_id, min(created_at) as started from refresh_tokens group by 1, 2) f
     where f.tenant_id = r.tenant_id and f.family_id = r.family_id;
    alter table refresh_tokens force row level security;
end
$$;
alter table refresh_tokens alter column family_started_at set default now();
alter table refresh_tokens alter column family_started_at set not null;

do $$
declare t text;
begin
    foreach t in array array['principal_seen', 'revoked_token'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant_isolation on %I using (tenant_id = app_tenant()) with check (tenant_id = app_tenant())', t);
        execute format('create policy identity_lookup on %I for select to panels_auth using (true)', t);
        execute format('grant select on %I to panels_auth', t);
    end loop;
end
$$;
grant select, insert, update, delete on principal_seen, revoked_token to panels_app;

-- Binding a tenant never replaces another: inside a transaction already bound to a tenant, a
-- one-statement function asked for a different one refuses (a caller's bug can no longer read
-- across tenants through it).
create or replace function panels_bind_tenant(p_tenant text) returns text
language plpgsql volatile
as $$
declare
    previous text := coalesce(current_setting('app.tenant', true), '');
begin
    if previous <> '' and previous is distinct from p_tenant then
        raise exception 'this transaction is bound to another tenant'
            using errcode = 'insufficient_privilege';
    end if;
    perform set_config('app.tenant', p_tenant, true);
    return previous;
end
$$;

-- Scheduled runs only for a source that exists in that tenant and panel and has a schedule, and
-- never for another tenant than the one a transaction is bound to.
create or replace function enqueue_scheduled_run(p_tenant text, p_panel bigint, p_source bigint)
    returns void language plpgsql volatile security definer
    set search_path = pg_catalog, public, pg_temp
    as $$
begin
    if coalesce(current_setting('app.tenant', true), '') not in ('', p_tenant) then
        raise exception 'this transaction is bound to another tenant'
            using errcode = 'insufficient_privilege';
    end if;
    insert into sync_run (tenant_id, panel_id, data_source_id, trigger)
    select d.tenant_id, d.panel_id, d.id, 'schedule'
      from data_source d
     where d.tenant_id = p_tenant and d.panel_id = p_panel and d.id = p_source
       and jsonb_typeof(d.config -> 'schedule') = 'object'
    on conflict (tenant_id, data_source_id) where status in ('queued', 'running', 'failed') do nothing;
end
$$;

-- Identity look-ups, again: the refresh token's login start, and the API key's creator as
-- they are now.
drop function auth_find_refresh_token(bytea);
create function auth_find_refresh_token(p_hash bytea)
    returns table (id bigint, tenant_id text, user_id bigint, family_id uuid, expires_at timestamptz,
                   rotated_at timestamptz, revoked_at timestamptz, email text, role text,
                   family_started_at timestamptz)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$ select r.id, r.tenant_id, r.user_id, r.family_id, r.expires_at, r.rotated_at, r.revoked_at,
                 u.email, u.role, r.family_started_at
          from refresh_tokens r join users u on u.tenant_id = r.tenant_id and u.id = r.user_id
          where r.token_hash = p_hash $$;

drop function auth_find_api_key(bytea);
create function auth_find_api_key(p_digest bytea)
    returns table (id bigint, tenant_id text, scope text, expires_at timestamptz, revoked_at timestamptz,
                   last_used_at timestamptz, created_by text, created_by_email text, creator_role text)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$ select k.id, k.tenant_id, k.scope, k.expires_at, k.revoked_at, k.last_used_at, k.created_by,
                 k.created_by_email,
                 case k.creator_kind
                     when 'user' then (select u.role from users u
                                        where u.tenant_id = k.tenant_id
                                          and u.id = case when k.created_by ~ '^[0-9]{1,18}$'
                                                          then k.created_by::bigint end)
                     else (select s.role from principal_seen s
                            where s.tenant_id = k.tenant_id and s.subject = k.created_by)
                 end
          from api_keys k where k.key_digest = p_digest $$;

-- Revocations of every tenant since a moment, for each instance's denylist.
create function auth_revoked_tokens_since(p_since timestamptz)
    returns table (token_digest bytea, expires_at timestamptz, revoked_at timestamptz)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$ select r.token_digest, r.expires_at, r.revoked_at from revoked_token r
          where r.revoked_at >= p_since and r.expires_at > now() $$;

-- The security-definer functions resolve names only in pg_catalog and public (pg_temp last, so
-- a caller's temporary table cannot shadow one).
alter function auth_find_login(text) set search_path = pg_catalog, public, pg_temp;
alter function auth_find_invitation(bytea) set search_path = pg_catalog, public, pg_temp;
alter function claim_sync_run(text, integer) set search_path = pg_catalog, public, pg_temp;
alter function scheduled_sources() set search_path = pg_catalog, public, pg_temp;

do $$
declare f text;
begin
    foreach f in array array['auth_find_refresh_token(bytea)', 'auth_find_api_key(bytea)',
                             'auth_revoked_tokens_since(timestamptz)'] loop
        execute format('alter function %s owner to panels_auth', f);
    end loop;
end
$$;

-- No function of this schema is callable by PUBLIC: only by the server's own roles (another
-- role of the same cluster cannot bind a tenant or look identities up).
do $$
declare f record;
begin
    for f in select p.oid::regprocedure as sig
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'public' and p.prokind = 'f'
                and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e') loop
        execute format('revoke all on function %s from public', f.sig);
        execute format('grant execute on function %s to panels_app, panels_auth, panels_worker', f.sig);
    end loop;
end
$$;
alter default privileges revoke execute on functions from public;
alter default privileges grant execute on functions to panels_app, panels_auth, panels_worker;
