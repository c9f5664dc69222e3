-- Signed webhooks (src/webhooks, docs/webhooks.md): a tenant's HTTP endpoints that receive its
-- events. Deliveries are made from the event log, never from request handlers: a dispatcher
-- follows each tenant's log by the commit-safe cursor the streams use (migration
-- 20261205000100) and queues one delivery per matching webhook in the same transaction that moves
-- its cursor, so a restart neither loses nor repeats one; workers claim due deliveries with
-- `for update skip locked` and a lease, like sync runs.

create table webhook (
    id                          bigint generated always as identity primary key,
    tenant_id                   text not null,
    -- Only this panel's events; null: every event of the tenant (admins only).
    panel_id                    bigint,
    url                         text not null,
    description                 text,
    -- Types and families as `GET /api/events?types=` takes them (`panel.updated`, `view.*`).
    events                      text[] not null,
    enabled                     boolean not null default true,
    -- Why it was disabled by the server (consecutive failures), null when a user did it.
    disabled_reason             text,
    disabled_at                 timestamptz,
    -- The signing secret (`whsec_…`), sealed with ENCRYPTION_KEY (`v2:<key id>:…`), and the one it
    -- replaced, still signing beside it until `previous_secret_expires_at`.
    secret                      text not null,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    secret_rotated_at           timestamptz,
    -- The webhook receives the events of transactions this snapshot (`pg_current_snapshot()`)
    -- had not seen finished: it starts at the present when created or enabled again.
    since_snapshot              text not null default pg_current_snapshot()::text,
    -- The first failed attempt since the last success: the webhook is disabled when every attempt
    -- has failed for WEBHOOK_DISABLE_AFTER_MS.
    failing_since               timestamptz,
    last_success_at             timestamptz,
    -- Deliveries not queued because the tenant's queue was full (WEBHOOK_MAX_QUEUED_PER_TENANT).
    dropped                     bigint not null default 0,
    created_by                  text not null,
    version                     integer not null default 1,
    created_at                  timestamptz not null default now(),
    updated_at                  timestamptz not null default now(),
    constraint webhook_tenant_id_key unique (tenant_id, id),
    -- A panel's webhooks go with it (they must never widen to the whole tenant).
    constraint webhook_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade,
    constraint webhook_url_length check (char_length(url) between 1 and 2048),
    constraint webhook_description_length check (char_length(description) <= 1000),
    constraint webhook_events_count check (cardinality(events) between 1 and 64)
);
create index webhook_tenant_idx on webhook (tenant_id, id);
create index webhook_panel_idx on webhook (tenant_id, panel_id);
-- The version (ETag) and updated_at move with what a user changes, not with the delivery
-- bookkeeping the workers write (failing_since, last_success_at, dropped).
create trigger webhook_touch before update of url, description, events, panel_id, enabled, secret
    on webhook for each row execute function touch_row();

-- Per tenant, where the dispatcher stands in the event log: every event up to it has been
-- queued for the webhooks it matched.
create table webhook_cursor (
    tenant_id  text primary key,
    txid       xid8 not null,
    seq        bigint not null
);

create table webhook_delivery (
    id               bigint generated always as identity primary key,
    tenant_id        text not null,
    webhook_id       bigint not null,
    -- The `webhook-id` header: the event's id (its cursor), or `test_…` for a test message. The
    -- same for every attempt, so a receiver can deduplicate.
    event_id         text not null,
    event_type       text not null,
    -- The body, byte for byte as the event stream sends the event (text, not jsonb: the
    -- signature covers these exact bytes).
    payload          text not null,
    -- pending → delivering → succeeded | pending (a retry is due at next_attempt_at) | failed.
    status           text not null default 'pending',
    attempts         integer not null default 0,
    max_attempts     integer not null,
    next_attempt_at  timestamptz not null default now(),
    lease_until      timestamptz,
    locked_by        text,
    response_code    integer,
    last_error       text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    finished_at      timestamptz,
    constraint webhook_delivery_tenant_id_key unique (tenant_id, id),
    -- One delivery of an event per webhook, however often the dispatcher is interrupted.
    constraint webhook_delivery_event_key unique (tenant_id, webhook_id, event_id),
    constraint webhook_delivery_status_check check (status in ('pending', 'delivering', 'succeeded', 'failed')),
    constraint webhook_delivery_webhook_fkey foreign key (tenant_id, webhook_id)
        references webhook (tenant_id, id) on delete cascade
);
create index webhook_delivery_due_idx on webhook_delivery (next_attempt_at) where status in ('pending', 'delivering');
create index webhook_delivery_webhook_idx on webhook_delivery (tenant_id, webhook_id, id desc);
-- The tenant's queue, counted against WEBHOOK_MAX_QUEUED_PER_TENANT at every dispatch.
create index webhook_delivery_queued_idx on webhook_delivery (tenant_id) where status in ('pending', 'delivering');
create index webhook_delivery_finished_idx on webhook_delivery (finished_at) where finished_at is not null;

-- Every attempt of a delivery: what the receiver answered, how long it took, what failed.
create table webhook_attempt (
    id             bigint generated always as identity primary key,
    tenant_id      text not null,
    delivery_id    bigint not null,
    attempt        integer not null,
    status         text not null,
    started_at     timestamptz not null,
    duration_ms    integer not null,
    response_code  integer,
    -- The first KB of the response body (for the log; at most 64 KB is ever read).
    response_body  text,
    error          text,
    constraint webhook_attempt_status_check check (status in ('succeeded', 'failed')),
    constraint webhook_attempt_delivery_fkey foreign key (tenant_id, delivery_id)
        references webhook_delivery (tenant_id, id) on delete cascade
);
create index webhook_attempt_delivery_idx on webhook_attempt (tenant_id, delivery_id, attempt);

do $$
declare t text;
begin
    foreach t in array array['webhook', 'webhook_cursor', 'webhook_delivery', 'webhook_attempt'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant_isolation on %I using (tenant_id = app_tenant()) with check (tenant_id = app_tenant())', t);
    end loop;
end
$$;
grant select, insert, update, delete on webhook, webhook_cursor, webhook_delivery, webhook_attempt to panels_app;
grant usage, select on all sequences in schema public to panels_app;

-- The workers find the tenants to dispatch for, claim due deliveries and delete old ones across
-- tenants before they know a tenant: through these functions only (owned by panels_worker).
create policy worker_scan on webhook for select to panels_worker using (true);
create policy worker_claim on webhook_delivery to panels_worker using (true) with check (true);
grant select on webhook to panels_worker;
grant select, update, delete on webhook_delivery to panels_worker;

-- The tenants with an enabled webhook.
create function webhook_tenants()
    returns table (tenant_id text)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$ select distinct w.tenant_id from webhook w where w.enabled $$;

-- Claims the next due delivery of an enabled webhook (skipping those another worker holds, and
-- taking back those whose worker's lease ran out) and leases it; the attempt is counted now.
create function claim_webhook_delivery(p_worker text, p_lease_seconds integer)
    returns table (id bigint, tenant_id text, webhook_id bigint, attempts integer, max_attempts integer)
    language sql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
    update webhook_delivery d set status = 'delivering', attempts = d.attempts + 1, locked_by = p_worker,
           lease_until = now() + make_interval(secs => p_lease_seconds), updated_at = now()
    where d.id = (
        select q.id from webhook_delivery q
         where ((q.status = 'pending' and q.next_attempt_at <= now())
                or (q.status = 'delivering' and q.lease_until < now()))
           and exists (select 1 from webhook w
                        where w.tenant_id = q.tenant_id and w.id = q.webhook_id and w.enabled)
         order by q.next_attempt_at
         for update of q skip locked
         limit 1)
    returning d.id, d.tenant_id, d.webhook_id, d.attempts, d.max_attempts
    $$;

-- Deletes finished deliveries older than `p_before`, at most `p_limit`; their attempts go with
-- them (foreign-key actions are not subject to row-level security).
create function purge_webhook_deliveries(p_before timestamptz, p_limit integer)
    returns bigint
    language sql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
    with doomed as (
        select d.tenant_id, d.id from webhook_delivery d
         where d.finished_at < p_before order by d.finished_at limit p_limit
    ), gone as (
        delete from webhook_delivery d using doomed x
         where d.tenant_id = x.tenant_id and d.id = x.id
        returning 1
    )
    select count(*) from gone
    $$;

do $$
declare f text;
begin
    foreach f in array array['webhook_tenants()', 'claim_webhook_delivery(text, integer)',
                             'purge_webhook_deliveries(timestamptz, integer)'] loop
        execute format('alter function %s owner to panels_worker', f);
        execute format('revoke all on function %s from public', f);
        execute format('grant execute on function %s to panels_app, panels_worker', f);
    end loop;
end
$$;
