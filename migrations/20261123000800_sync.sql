-- Rows of panels, and the durable queue of sync runs.

-- A panel's rows: one per (data source, record key), the record as JSONB, and a hash so a sync
-- skips rows that did not change.
create table panel_row (
    id              bigint generated always as identity primary key,
    tenant_id       text not null,
    panel_id        bigint not null,
    data_source_id  bigint not null,
    record_key      text not null,
    data            jsonb not null,
    hash            bytea not null,
    seen_run        bigint,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint panel_row_key unique (tenant_id, data_source_id, record_key),
    constraint panel_row_data_source_fkey foreign key (tenant_id, data_source_id)
        references data_source (tenant_id, id) on delete cascade,
    constraint panel_row_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade
);
-- Keyset pages of a panel's rows, and filters/sorts on JSONB fields later.
create index panel_row_panel_idx on panel_row (tenant_id, panel_id, id);
create index panel_row_data_gin on panel_row using gin (data jsonb_path_ops);

-- A sync run is a job: queued → running → succeeded | failed (will retry) → dead (gave up).
create table sync_run (
    id              bigint generated always as identity primary key,
    tenant_id       text not null,
    panel_id        bigint not null,
    data_source_id  bigint not null,
    status          text not null default 'queued',
    trigger         text not null default 'manual',
    attempts        integer not null default 0,
    max_attempts    integer not null default 5,
    run_at          timestamptz not null default now(),
    lease_until     timestamptz,
    locked_by       text,
    started_at      timestamptz,
    finished_at     timestamptz,
    inserted        bigint not null default 0,
    updated         bigint not null default 0,
    unchanged       bigint not null default 0,
    deleted         bigint not null default 0,
    errors          jsonb not null default '[]',
    last_error      text,
    created_at      timestamptz not null default now(),
    constraint sync_run_tenant_id_key unique (tenant_id, id),
    constraint sync_run_status_check check (status in ('queued', 'running', 'succeeded', 'failed', 'dead')),
    constraint sync_run_data_source_fkey foreign key (tenant_id, data_source_id)
        references data_source (tenant_id, id) on delete cascade
);
-- Single flight: at most one live run per data source; a second request joins it.
create unique index sync_run_live_key on sync_run (tenant_id, data_source_id) where status in ('queued', 'running', 'failed');
create index sync_run_due_idx on sync_run (run_at) where status in ('queued', 'failed');
create index sync_run_source_idx on sync_run (tenant_id, data_source_id, id desc);

do $$
declare t text;
begin
    foreach t in array array['panel_row', 'sync_run'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant_isolation on %I using (tenant_id = app_tenant()) with check (tenant_id = app_tenant())', t);
    end loop;
end
$$;

-- Workers claim runs of every tenant before they know the tenant: through this function only.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'panels_worker') then
        create role panels_worker nologin nosuperuser nobypassrls noinherit;
    end if;
exception when duplicate_object or unique_violation then null;
end
$$;
do $$
begin
    execute format('grant panels_worker to %I', current_user);
exception when others then null;
end
$$;
create policy worker_claim on sync_run to panels_worker using (true) with check (true);
create policy worker_scan on data_source for select to panels_worker using (true);
grant select, update on sync_run to panels_worker;
grant select on data_source to panels_worker;
grant usage on schema public to panels_worker;

-- Claims the next due run (skipping those another worker holds) and leases it.
create function claim_sync_run(p_worker text, p_lease_seconds integer)
    returns table (id bigint, tenant_id text, panel_id bigint, data_source_id bigint, attempts integer, max_attempts integer)
    language sql volatile security definer set search_path = public
    as $$
    update sync_run r set status = 'running', attempts = r.attempts + 1, locked_by = p_worker,
           lease_until = now() + make_interval(secs => p_lease_seconds), started_at = coalesce(r.started_at, now())
    where r.id = (
        select q.id from sync_run q
        where (q.status in ('queued', 'failed') and q.run_at <= now())
           or (q.status = 'running' and q.lease_until < now())
        order by q.run_at
        for update skip locked
        limit 1)
    returning r.id, r.tenant_id, r.panel_id, r.data_source_id, r.attempts, r.max_attempts
    $$;

-- Data sources whose schedule may be due (the scheduler decides per source in Rust).
create function scheduled_sources()
    returns table (id bigint, tenant_id text, panel_id bigint, schedule jsonb, last_sync timestamptz)
    language sql stable security definer set search_path = public
    as $$ select d.id, d.tenant_id, d.panel_id, d.config -> 'schedule', d.last_sync from data_source d
          where d.config ? 'schedule' and jsonb_typeof(d.config -> 'schedule') = 'object' $$;

-- Enqueues a scheduled run for a source of any tenant (single flight: joins a live one).
create function enqueue_scheduled_run(p_tenant text, p_panel bigint, p_source bigint)
    returns void language sql volatile security definer set search_path = public
    as $$ insert into sync_run (tenant_id, panel_id, data_source_id, trigger) values (p_tenant, p_panel, p_source, 'schedule')
          on conflict (tenant_id, data_source_id) where status in ('queued', 'running', 'failed') do nothing $$;
create policy worker_enqueue on sync_run for insert to panels_worker with check (true);
grant insert on sync_run to panels_worker;

do $$
declare f text;
begin
    foreach f in array array['claim_sync_run(text, integer)', 'scheduled_sources()', 'enqueue_scheduled_run(text, bigint, bigint)'] loop
        execute format('alter function %s owner to panels_worker', f);
        execute format('revoke all on function %s from public', f);
        execute format('grant execute on function %s to panels_app', f);
    end loop;
end
$$;

grant select, insert, update, delete on all tables in schema public to panels_app;
grant usage, select on all sequences in schema public to panels_app;
grant usage, select on all sequences in schema public to panels_worker;
