-- The event log (src/events): every committed change writes its event in the same transaction
-- (the transactional outbox), and readers follow it by a commit-safe cursor.
--
-- The cursor is (txid, seq): the writing transaction's id and a sequence number. A sequence alone
-- is not safe: transaction A takes seq 10, B takes seq 11 and commits first, a reader at "> 10"
-- would see 11 and then never 10. Readers therefore only read events whose transaction is older
-- than the oldest transaction still running (`txid < pg_snapshot_xmin(pg_current_snapshot())`),
-- in (txid, seq) order: every transaction that can still commit has a txid at or above that
-- horizon, so it sorts after everything a reader has been given. The price: one long writing
-- transaction anywhere in the cluster holds every stream back (delayed, never lost).
create table event (
    tenant_id  text not null,
    txid       xid8 not null default pg_current_xact_id(),
    seq        bigint generated always as identity,
    type       text not null,
    panel_id   bigint,
    view_id    bigint,
    entity_id  text,
    -- Who receives it beyond the panel's readers rule (events::model::Audience): 'user:<key>',
    -- that user alone (a notification); 'view:<owner>', a private view's owner, those it is
    -- shared with and admins.
    audience   text,
    actor      jsonb not null,
    at         timestamptz not null default now(),
    data       jsonb not null default '{}',
    constraint event_pkey primary key (tenant_id, txid, seq),
    constraint event_type_check check (type ~ '^[a-z]+(\.[a-z]+)+$')
);
-- Retention (purge_events) deletes by age across tenants.
create index event_at_idx on event (at);

alter table event enable row level security;
alter table event force row level security;
create policy tenant_isolation on event using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
create policy worker_purge on event for delete to panels_worker using (true);
create policy worker_purge_read on event for select to panels_worker using (true);
-- Events are history: the application appends and reads, never edits.
revoke all on event from panels_app;
grant select, insert on event to panels_app;
grant select, delete on event to panels_worker;
grant usage, select on all sequences in schema public to panels_app;

-- Per tenant, the last cursor retention deleted: a reader resuming at or before it has missed
-- events and is told to start again (`event: reset`).
create table event_horizon (
    tenant_id text primary key,
    txid      xid8 not null,
    seq       bigint not null
);
alter table event_horizon enable row level security;
alter table event_horizon force row level security;
create policy tenant_isolation on event_horizon using (tenant_id = app_tenant());
create policy worker_all on event_horizon to panels_worker using (true) with check (true);
revoke all on event_horizon from panels_app;
grant select on event_horizon to panels_app;
grant select, insert, update on event_horizon to panels_worker;

-- Deletes the events written before `p_before`, at most `p_limit` of them, and moves each
-- tenant's horizon to the last cursor deleted. Answers how many were deleted.
create function purge_events(p_before timestamptz, p_limit integer)
    returns bigint
    language plpgsql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
declare
    n bigint;
begin
    with doomed as (
        select e.tenant_id, e.txid, e.seq from event e where e.at < p_before
        order by e.at limit p_limit
    ), gone as (
        delete from event e using doomed d
         where e.tenant_id = d.tenant_id and e.txid = d.txid and e.seq = d.seq
        returning e.tenant_id, e.txid, e.seq
    ), counted as (
        select count(*) as n from gone
    ), last as (
        select distinct on (g.tenant_id) g.tenant_id, g.txid, g.seq from gone g
        order by g.tenant_id, g.txid desc, g.seq desc
    ), moved as (
        insert into event_horizon as h (tenant_id, txid, seq)
        select l.tenant_id, l.txid, l.seq from last l
        on conflict (tenant_id) do update set txid = excluded.txid, seq = excluded.seq
         where (h.txid, h.seq) < (excluded.txid, excluded.seq)
    )
    select c.n into n from counted c;
    return n;
end $$;

-- Single-use tickets for browsers' EventSource, which cannot send an Authorization header: the
-- authenticated client asks for one (`POST /api/events/tickets`) and opens the stream with
-- `?ticket=`; only a hash is stored, and it lives 60 seconds.
create table event_ticket (
    hash        bytea primary key,
    tenant_id   text not null,
    user_id     text not null,
    email       text not null,
    role        text not null,
    api_key_id  bigint,
    expires_at  timestamptz not null
);
create index event_ticket_expires_idx on event_ticket (expires_at);
alter table event_ticket enable row level security;
alter table event_ticket force row level security;
create policy tenant_isolation on event_ticket using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
create policy ticket_redeem on event_ticket for select to panels_auth using (true);
create policy ticket_redeem_delete on event_ticket for delete to panels_auth using (true);
revoke all on event_ticket from panels_app;
grant insert on event_ticket to panels_app;
grant select, delete on event_ticket to panels_auth;

-- Redeems a ticket: answers who it was issued to and deletes it (a second redemption finds
-- nothing); expired tickets are cleared on the way.
create function redeem_event_ticket(p_hash bytea)
    returns table (tenant_id text, user_id text, email text, role text, api_key_id bigint)
    language plpgsql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
begin
    delete from event_ticket t where t.expires_at < now() - interval '1 minute';
    return query
        delete from event_ticket t where t.hash = p_hash and t.expires_at > now()
        returning t.tenant_id, t.user_id, t.email, t.role, t.api_key_id;
end $$;

alter function purge_events(timestamptz, integer) owner to panels_worker;
alter function redeem_event_ticket(bytea) owner to panels_auth;
revoke all on function purge_events(timestamptz, integer) from public;
revoke all on function redeem_event_ticket(bytea) from public;
grant execute on function purge_events(timestamptz, integer) to panels_app, panels_worker;
grant execute on function redeem_event_ticket(bytea) to panels_app, panels_auth;

-- The grouped panel create writes its `panel.created` events in its one statement, like every
-- other write does in its transaction (src/write.rs).
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
        )
        select i.ord, p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule,
               p.metadata, p.version, p.created_at, p.updated_at
          from p join input i on i.new_id = p.id;
    perform set_config('app.tenant', previous, true);
end
$$;
