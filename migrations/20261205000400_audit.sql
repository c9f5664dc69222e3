-- The audit log (src/audit, docs/audit.md): who did what, kept small, fast to query and
-- tamper-evident.
--
-- * Monthly range partitions on `at`; retention drops whole partitions (`audit_maintain`), never
--   deletes rows. A default partition catches anything outside the partitions made ahead, so an
--   insert never fails for want of one.
-- * The application role may insert and read its tenant's entries, never update or delete them.
-- * Each tenant's entries form a hash chain: a trigger takes the tenant's head (`audit_head`, a
--   row lock held to the commit), numbers the entry (`seq`), links it to the previous entry's hash
--   and hashes the entry's JSON form with it. `audit_verify()` recomputes the chain.

create sequence audit_entry_id_seq;

create table audit_entry (
    tenant_id    text not null,
    -- The entry's place in its tenant's chain (1, 2, …): set by the trigger.
    seq          bigint not null,
    id           bigint not null default nextval('audit_entry_id_seq'),
    -- The moment of the insert, not of the transaction's start: entries of one tenant are in the
    -- order of their chain.
    at           timestamptz not null default clock_timestamp(),
    actor_type   text not null,
    actor_id     text not null,
    actor_email  text,
    action       text not null,
    method       text,
    route        text,
    status       integer,
    entity_type  text,
    entity_id    text,
    panel_id     bigint,
    request_id   text,
    ip           text,
    user_agent   text,
    changes      jsonb,
    prev_hash    bytea,
    hash         bytea not null,
    constraint audit_entry_pkey primary key (tenant_id, at, id),
    constraint audit_entry_actor_check check (actor_type in ('user', 'apiKey', 'system')),
    constraint audit_entry_action_check check (action ~ '^[a-z][a-zA-Z_]*(\.[a-z][a-zA-Z_]*)+$')
) partition by range (at);
alter sequence audit_entry_id_seq owned by audit_entry.id;

-- The admin's queries: one entity's history, one panel's, and the chain's order for verify.
create index audit_entry_entity_idx on audit_entry (tenant_id, entity_type, entity_id, at, id);
create index audit_entry_panel_idx on audit_entry (tenant_id, panel_id, at, id) where panel_id is not null;
create index audit_entry_actor_idx on audit_entry (tenant_id, actor_id, at, id);
create index audit_entry_seq_idx on audit_entry (tenant_id, seq);

create table audit_entry_default partition of audit_entry default;

-- Per tenant, the last entry of the chain: its number and hash.
create table audit_head (
    tenant_id  text primary key,
    seq        bigint not null,
    hash       bytea not null
);
-- Nobody but the chain's trigger and verify (both security definer) reads or writes it.
revoke all on audit_head from public;

-- The hash of an entry: SHA-256 of the previous entry's hash and the entry's fields as one JSON
-- array (JSON, not a separator-joined text: no value can be shifted into its neighbour without
-- changing the bytes). `at` in microseconds since the epoch, independent of the session's TimeZone
-- and DateStyle.
create function audit_hash(
    p_prev bytea, p_tenant text, p_seq bigint, p_id bigint, p_at timestamptz,
    p_actor_type text, p_actor_id text, p_actor_email text, p_action text, p_method text,
    p_route text, p_status integer, p_entity_type text, p_entity_id text, p_panel_id bigint,
    p_request_id text, p_ip text, p_user_agent text, p_changes jsonb
) returns bytea
language sql immutable parallel safe
set search_path = pg_catalog, public, pg_temp
as $$
    select sha256(coalesce(p_prev, ''::bytea) || convert_to(jsonb_build_array(
        p_tenant, p_seq, p_id, (extract(epoch from p_at) * 1000000)::bigint, p_actor_type,
        p_actor_id, p_actor_email, p_action, p_method, p_route, p_status, p_entity_type,
        p_entity_id, p_panel_id, p_request_id, p_ip, p_user_agent, p_changes)::text, 'UTF8'))
$$;

create function audit_chain() returns trigger
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    head_seq bigint;
    head_hash bytea;
begin
    -- The head's row lock orders the tenant's entries; it is held to the commit, so the write path
    -- inserts its entry last, just before committing.
    select h.seq, h.hash into head_seq, head_hash
      from audit_head h where h.tenant_id = new.tenant_id for update;
    if not found then
        insert into audit_head (tenant_id, seq, hash) values (new.tenant_id, 0, ''::bytea)
            on conflict (tenant_id) do nothing;
        select h.seq, h.hash into head_seq, head_hash
          from audit_head h where h.tenant_id = new.tenant_id for update;
    end if;
    new.seq := head_seq + 1;
    new.prev_hash := case when head_seq = 0 then null else head_hash end;
    new.hash := audit_hash(new.prev_hash, new.tenant_id, new.seq, new.id, new.at,
        new.actor_type, new.actor_id, new.actor_email, new.action, new.method, new.route,
        new.status, new.entity_type, new.entity_id, new.panel_id, new.request_id, new.ip,
        new.user_agent, new.changes);
    update audit_head set seq = new.seq, hash = new.hash where tenant_id = new.tenant_id;
    return new;
end
$$;
create trigger audit_entry_chain before insert on audit_entry
    for each row execute function audit_chain();
-- Nobody edits an entry, not even a role that may (the owner, a superuser's session): an update
-- is refused by the trigger as well as by the missing grant. Tamper evidence still holds when
-- this trigger is disabled: verify finds the edit.
create function audit_refuse_update() returns trigger language plpgsql
set search_path = pg_catalog, public, pg_temp
as $$ begin raise exception 'audit entries are not edited' using errcode = '42501'; end $$;
create trigger audit_entry_no_update before update on audit_entry
    for each row execute function audit_refuse_update();

-- Recomputes the caller's tenant's chain in order and answers the first broken entry (none:
-- the chain holds), with how many entries were checked. Broken: the entry's hash is not the hash
-- of its fields and its predecessor's; or its predecessor's hash is not its `prev_hash`; or a
-- number is missing between two entries (a deleted entry); or the head names a later entry than
-- the last one there (the newest entries deleted). The first entry left after retention is taken
-- as it is (its predecessor was dropped with its month).
create function audit_verify()
returns table (checked bigint, broken_seq bigint, broken_id bigint, broken_at timestamptz, reason text)
language plpgsql stable security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    tenant text := app_tenant();
    r record;
    n bigint := 0;
    last_seq bigint;
    last_hash bytea;
    head record;
begin
    if tenant is null or tenant = '' then
        raise exception 'no tenant bound' using errcode = '42501';
    end if;
    for r in
        select e.seq, e.id, e.at, e.prev_hash, e.hash,
               audit_hash(e.prev_hash, e.tenant_id, e.seq, e.id, e.at, e.actor_type, e.actor_id,
                   e.actor_email, e.action, e.method, e.route, e.status, e.entity_type,
                   e.entity_id, e.panel_id, e.request_id, e.ip, e.user_agent, e.changes) as computed
          from audit_entry e
         where e.tenant_id = tenant
         order by e.seq
    loop
        n := n + 1;
        if r.computed <> r.hash then
            return query select n, r.seq, r.id, r.at, 'the entry was changed after it was written';
            return;
        end if;
        if last_seq is not null and r.seq <> last_seq + 1 then
            return query select n, r.seq, r.id, r.at,
                format('entries %s to %s are missing before this one', last_seq + 1, r.seq - 1);
            return;
        end if;
        if last_seq is not null and r.prev_hash is distinct from last_hash then
            return query select n, r.seq, r.id, r.at, 'the entry does not follow the one before it';
            return;
        end if;
        last_seq := r.seq;
        last_hash := r.hash;
    end loop;
    select h.seq, h.hash into head from audit_head h where h.tenant_id = tenant;
    if head.seq is not null and head.seq <> coalesce(last_seq, 0) then
        return query select n, coalesce(last_seq, 0) + 1, null::bigint, null::timestamptz,
            format('entries %s to %s are missing at the end', coalesce(last_seq, 0) + 1, head.seq);
        return;
    end if;
    return query select n, null::bigint, null::bigint, null::timestamptz, null::text;
end
$$;

-- A partition read directly is a table of its own: row-level security, forced, like the parent
-- (the application role has no grant on it either).
create function audit_protect(p_table text) returns void
language plpgsql
set search_path = pg_catalog, public, pg_temp
as $$
begin
    execute format('alter table public.%I enable row level security', p_table);
    execute format('alter table public.%I force row level security', p_table);
    execute format('create policy tenant_isolation on public.%I using (tenant_id = app_tenant()) with check (tenant_id = app_tenant())', p_table);
end
$$;
revoke all on function audit_protect(text) from public;
select audit_protect('audit_entry_default');
alter table audit_head enable row level security;
alter table audit_head force row level security;
create policy tenant_isolation on audit_head using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());

-- Makes this month's partition and the next `p_ahead` months', and drops the partitions wholly
-- older than `p_retention_days`. Answers the partitions dropped. Run by the worker's scheduler
-- on the owner's connection (as the index builder is); nobody else may call it.
create function audit_maintain(p_retention_days integer, p_ahead integer default 2)
returns setof text
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    month date := date_trunc('month', now() at time zone 'UTC')::date;
    part record;
    upper_bound timestamptz;
    i integer;
    name text;
begin
    if p_retention_days < 1 then
        raise exception 'retention must be at least a day' using errcode = '22023';
    end if;
    for i in 0 .. greatest(p_ahead, 0) loop
        name := 'audit_entry_' || to_char(month + make_interval(months => i), 'YYYYMM');
        if to_regclass('public.' || name) is null then
            execute format(
                'create table public.%I partition of audit_entry for values from (%L) to (%L)', name,
                (month + make_interval(months => i))::timestamp at time zone 'UTC',
                (month + make_interval(months => i + 1))::timestamp at time zone 'UTC');
            perform audit_protect(name);
        end if;
    end loop;
    for part in
        select c.relname, pg_get_expr(c.relpartbound, c.oid) as bound
          from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'audit_entry'::regclass and c.relname ~ '^audit_entry_[0-9]{6}$'
    loop
        upper_bound := (regexp_match(part.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz;
        if upper_bound <= now() - make_interval(days => p_retention_days) then
            execute format('drop table public.%I', part.relname);
            return next part.relname;
        end if;
    end loop;
end
$$;
revoke all on function audit_maintain(integer, integer) from public;
revoke all on function audit_verify() from public;
grant execute on function audit_verify() to panels_app;
revoke all on function audit_chain() from public;
revoke all on function audit_refuse_update() from public;

select audit_maintain(365);

alter table audit_entry enable row level security;
alter table audit_entry force row level security;
create policy tenant_isolation on audit_entry using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
-- History: the application appends and reads, never edits.
revoke all on audit_entry from panels_app;
grant select, insert on audit_entry to panels_app;
grant usage on sequence audit_entry_id_seq to panels_app;

-- The grouped panel create (`POST /api/panels` without a key) writes its audit entries in its
-- statement, as it writes its events: a panel carries `audit`, the entry without its entity id.
create or replace function create_panels(p_tenant text, p_panels jsonb)
returns table (
    ord bigint, id bigint, tenant_id text, user_id text, name text, description text,
    cohort_rule jsonb, metadata jsonb, version integer, created_at timestamptz,
    updated_at timestamptz
)
language plpgsql volatile
as $$
#variable_conflict use_column
declare
    previous text := panels_bind_tenant(p_tenant);
begin
    return query
        with input as materialized (
            select e.ord, e.value, nextval(pg_get_serial_sequence('panel', 'id')) as new_id
              from jsonb_array_elements(p_panels) with ordinality as e(value, ord)
        ), p as (
            insert into panel as p (id, tenant_id, user_id, name, description, cohort_rule, metadata)
            overriding system value
            select i.new_id, p_tenant, i.value ->> 'userId', i.value ->> 'name',
                   i.value ->> 'description', i.value -> 'cohortRule', i.value -> 'metadata'
              from input i
            returning p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule,
                      p.metadata, p.version, p.created_at, p.updated_at
        ), owners as (
            insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
            select p_tenant, 'panel', i.new_id, i.value ->> 'owner', 'owner' from input i
        ), events as (
            insert into event (tenant_id, type, panel_id, entity_id, actor)
            select p_tenant, 'panel.created', i.new_id, i.new_id::text,
                   i.value -> 'actor'
              from input i
        ), audits as (
            insert into audit_entry (tenant_id, actor_type, actor_id, actor_email, action, method,
                                     route, status, entity_type, entity_id, panel_id, request_id,
                                     ip, user_agent, changes)
            select p_tenant, a ->> 'actor_type', a ->> 'actor_id', a ->> 'actor_email', a ->> 'action',
                   a ->> 'method', a ->> 'route', (a ->> 'status')::integer, 'panel',
                   i.new_id::text, i.new_id, a ->> 'request_id', a ->> 'ip', a ->> 'user_agent',
                   a -> 'changes'
              from input i cross join lateral (select i.value -> 'audit' as a) x
             where i.value ? 'audit'
             order by i.ord
        )
        select i.ord, p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule,
               p.metadata, p.version, p.created_at, p.updated_at
          from p join input i on i.new_id = p.id;
    perform set_config('app.tenant', previous, true);
end
$$;
