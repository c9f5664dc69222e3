-- The audit log (src/audit, docs/audit.md): who did what, kept small, fast to query and
-- tamper-evident.
--
-- * Monthly range partitions on `at`; retention drops whole partitions (`audit_maintain`), never
--   deletes rows. A default partition catches anything outside the partitions made ahead, so an
--   insert never fails for want of one.
-- * The application role may insert and read its tenant's entries, never update or delete them.
-- * Each tenant's entries form a hash chain, sealed just after they commit: `audit_seal` takes
--   the tenant's head (`audit_head`), numbers each committed entry not sealed yet (`seq`), links
--   it to the previous entry's hash and hashes the entry's JSON form with it, once; nothing else
--   may ever change an entry. Sealing after the commit, not in the writing transaction: a head
--   locked by every write until its commit serialised each tenant's writes behind one another's
--   commits (pgbench, 16 clients of one tenant: 2,660 transactions/s without the entry, 360 with
--   it chained in the transaction; bench/README.md, "Audit log"). `audit_verify()` recomputes the
--   chain.

create sequence audit_entry_id_seq;

create table audit_entry (
    tenant_id    text not null,
    -- The entry's place in its tenant's chain (1, 2, …), its predecessor's hash and its own: set
    -- once by `audit_seal`, null until then.
    seq          bigint,
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
    hash         bytea,
    constraint audit_entry_pkey primary key (tenant_id, at, id),
    constraint audit_entry_actor_check check (actor_type in ('user', 'apiKey', 'system')),
    constraint audit_entry_action_check check (action ~ '^[a-z][a-zA-Z_]*(\.[a-z][a-zA-Z_]*)+$')
) partition by range (at);
alter sequence audit_entry_id_seq owned by audit_entry.id;

-- The admin's queries: one entity's history, one panel's, and the chain's order for verify. An
-- actor's entries are read from the tenant's newest (the primary key) with a filter: one index
-- fewer on every insert.
create index audit_entry_entity_idx on audit_entry (tenant_id, entity_type, entity_id, at, id);
create index audit_entry_panel_idx on audit_entry (tenant_id, panel_id, at, id) where panel_id is not null;
create index audit_entry_seq_idx on audit_entry (tenant_id, seq);
-- The entries waiting for their seal: a handful at any moment.
create index audit_entry_unsealed_idx on audit_entry (tenant_id, id) where hash is null;

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

-- Seals the committed entries not sealed yet, in the order of their ids, of every tenant
-- (`p_tenant` null: the workers' sweep) or of one; at most `p_limit` per tenant. Answers how many
-- it sealed. The head's row lock serialises sealers of one tenant; an entry committed after a
-- sweep read the table is sealed by the next one.
create function audit_seal(p_tenant text, p_limit integer)
returns integer
language plpgsql security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
    t text;
    head_seq bigint;
    head_hash bytea;
    prev bytea;
    e record;
    h bytea;
    n integer := 0;
begin
    for t in
        select distinct u.tenant_id from audit_entry u
         where u.hash is null and (p_tenant is null or u.tenant_id = p_tenant)
    loop
        insert into audit_head (tenant_id, seq, hash) values (t, 0, ''::bytea)
            on conflict (tenant_id) do nothing;
        select hd.seq, hd.hash into head_seq, head_hash
          from audit_head hd where hd.tenant_id = t for update;
        for e in
            select * from audit_entry u
             where u.tenant_id = t and u.hash is null
             order by u.id
             limit p_limit
        loop
            prev := case when head_seq = 0 then null else head_hash end;
            head_seq := head_seq + 1;
            h := audit_hash(prev, e.tenant_id, head_seq, e.id, e.at, e.actor_type, e.actor_id,
                e.actor_email, e.action, e.method, e.route, e.status, e.entity_type, e.entity_id,
                e.panel_id, e.request_id, e.ip, e.user_agent, e.changes);
            update audit_entry u set seq = head_seq, prev_hash = prev, hash = h
             where u.tenant_id = t and u.at = e.at and u.id = e.id;
            head_hash := h;
            n := n + 1;
        end loop;
        update audit_head set seq = head_seq, hash = head_hash where tenant_id = t;
    end loop;
    return n;
end
$$;

-- Nobody edits an entry, not even a role that holds the table: the one update allowed is the
-- seal (the chain's three fields of an entry not sealed yet, nothing else). Tamper evidence still
-- holds when this trigger is disabled: verify finds the edit.
create function audit_refuse_update() returns trigger language plpgsql
set search_path = pg_catalog, public, pg_temp
as $$
begin
    if old.hash is null and new.hash is not null
       and (new.tenant_id, new.id, new.at, new.actor_type, new.actor_id, new.actor_email,
            new.action, new.method, new.route, new.status, new.entity_type, new.entity_id,
            new.panel_id, new.request_id, new.ip, new.user_agent, new.changes::text)
           is not distinct from
           (old.tenant_id, old.id, old.at, old.actor_type, old.actor_id, old.actor_email,
            old.action, old.method, old.route, old.status, old.entity_type, old.entity_id,
            old.panel_id, old.request_id, old.ip, old.user_agent, old.changes::text) then
        return new;
    end if;
    raise exception 'audit entries are not edited' using errcode = '42501';
end
$$;
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
         where e.tenant_id = tenant and e.hash is not null
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
revoke all on function audit_refuse_update() from public;
revoke all on function audit_hash(bytea, text, bigint, bigint, timestamptz, text, text, text, text, text, text, integer, text, text, bigint, text, text, text, jsonb) from public;
grant execute on function audit_hash(bytea, text, bigint, bigint, timestamptz, text, text, text, text, text, text, integer, text, text, bigint, text, text, text, jsonb) to panels_worker;
-- The seal runs as panels_worker (a policy of its own, the chain's columns only); the pool's role
-- may call it (the workers' sweep, and verify for its tenant first).
alter function audit_seal(text, integer) owner to panels_worker;
revoke all on function audit_seal(text, integer) from public;
grant execute on function audit_seal(text, integer) to panels_app, panels_worker;

select audit_maintain(365);

alter table audit_entry enable row level security;
alter table audit_entry force row level security;
create policy tenant_isolation on audit_entry using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
-- History: the application appends and reads, never edits.
revoke all on audit_entry from panels_app;
grant select, insert on audit_entry to panels_app;
grant usage on sequence audit_entry_id_seq to panels_app;
create policy worker_seal on audit_entry for select to panels_worker using (true);
create policy worker_seal_update on audit_entry for update to panels_worker using (true) with check (true);
grant select, update (seq, prev_hash, hash) on audit_entry to panels_worker;
create policy worker_seal on audit_head to panels_worker using (true) with check (true);
grant select, insert, update on audit_head to panels_worker;

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
