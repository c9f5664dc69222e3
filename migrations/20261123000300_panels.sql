-- The product's tables: panels, data sources, columns, views (with sorts), change tracking,
-- notifications, ACLs and idempotency keys. Every table leads with tenant_id, has row-level
-- security enabled and forced, and references its parent by (tenant_id, id) so a foreign key
-- can never cross tenants. Tenants of an external identity provider are never registered in
-- `tenants`, so tenant_id here is the token's slug, not a foreign key.

-- updated_at and version are maintained by the database, never by the application.
create function touch_row() returns trigger language plpgsql as $$
begin
    new.updated_at := now();
    new.version := old.version + 1;
    return new;
end
$$;

create table panel (
    id           bigint generated always as identity primary key,
    tenant_id    text not null,
    user_id      text not null,
    name         text not null,
    description  text,
    cohort_rule  jsonb not null default '{"conditions": [], "logic": "AND"}',
    metadata     jsonb not null default '{}',
    version      integer not null default 1,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint panel_tenant_id_key unique (tenant_id, id),
    constraint panel_name_length check (char_length(name) <= 255),
    constraint panel_description_length check (char_length(description) <= 2000)
);
create trigger panel_touch before update on panel for each row execute function touch_row();

create table data_source (
    id          bigint generated always as identity primary key,
    tenant_id   text not null,
    panel_id    bigint not null,
    type        text not null,
    config      jsonb not null default '{}',
    last_sync   timestamptz not null default now(),
    version     integer not null default 1,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint data_source_tenant_id_key unique (tenant_id, id),
    constraint data_source_type_check check (type in ('database', 'api', 'file', 'custom')),
    constraint data_source_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade
);
create index data_source_panel_idx on data_source (tenant_id, panel_id);
create trigger data_source_touch before update on data_source for each row execute function touch_row();

-- Base and calculated columns share one table and so one id space: an id names one column.
create table panel_column (
    id              bigint generated always as identity primary key,
    tenant_id       text not null,
    panel_id        bigint not null,
    kind            text not null,
    name            text not null,
    type            text not null,
    source_field    text,
    data_source_id  bigint,
    formula         text,
    dependencies    jsonb not null default '[]',
    result_type     text,
    properties      jsonb not null default '{}',
    metadata        jsonb,
    tags            jsonb not null default '[]',
    display_order   integer not null default 0,
    version         integer not null default 1,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint panel_column_tenant_id_key unique (tenant_id, id),
    constraint panel_column_name_key unique (tenant_id, panel_id, name),
    constraint panel_column_kind_check check (kind in ('base', 'calculated')),
    constraint panel_column_type_check check (type in ('text', 'number', 'date', 'datetime', 'boolean',
        'select', 'multi_select', 'user', 'file', 'custom')),
    constraint panel_column_name_length check (char_length(name) <= 255),
    constraint panel_column_source_field_length check (char_length(source_field) <= 1024),
    constraint panel_column_formula_length check (char_length(formula) <= 4096),
    constraint panel_column_base_fields check (kind <> 'base' or source_field is not null),
    constraint panel_column_calculated_fields check (kind <> 'calculated' or formula is not null),
    constraint panel_column_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade,
    constraint panel_column_data_source_fkey foreign key (tenant_id, data_source_id)
        references data_source (tenant_id, id) on delete set null (data_source_id)
);
create index panel_column_panel_idx on panel_column (tenant_id, panel_id, display_order);
create index panel_column_data_source_idx on panel_column (tenant_id, data_source_id);
create index panel_column_tags_idx on panel_column using gin (tags);
create trigger panel_column_touch before update on panel_column for each row execute function touch_row();

create table view (
    id               bigint generated always as identity primary key,
    tenant_id        text not null,
    panel_id         bigint not null,
    name             text not null,
    owner_user_id    text not null,
    owner_email      text not null default '',
    is_published     boolean not null default false,
    published_at     timestamptz,
    published_by     text,
    visible_columns  jsonb not null default '[]',
    filters          jsonb not null default '{"conditions": [], "logic": "AND"}',
    metadata         jsonb,
    version          integer not null default 1,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint view_tenant_id_key unique (tenant_id, id),
    constraint view_name_length check (char_length(name) <= 255),
    constraint view_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade
);
create index view_panel_idx on view (tenant_id, panel_id);
create index view_published_idx on view (tenant_id, is_published);
create index view_owner_idx on view (tenant_id, owner_user_id);
create trigger view_touch before update on view for each row execute function touch_row();

create table view_sort (
    id           bigint generated always as identity primary key,
    tenant_id    text not null,
    view_id      bigint not null,
    column_name  text not null,
    direction    text not null,
    "order"      integer not null,
    constraint view_sort_direction_check check (direction in ('asc', 'desc')),
    constraint view_sort_column_length check (char_length(column_name) <= 255),
    constraint view_sort_view_fkey foreign key (tenant_id, view_id) references view (tenant_id, id) on delete cascade
);
create index view_sort_view_idx on view_sort (tenant_id, view_id, "order");

create table panel_change (
    id               bigint generated always as identity primary key,
    tenant_id        text not null,
    panel_id         bigint not null,
    change_type      text not null,
    affected_column  text,
    description      text not null,
    changed_by       text not null,
    old_values       jsonb,
    new_values       jsonb,
    created_at       timestamptz not null default now(),
    constraint panel_change_tenant_id_key unique (tenant_id, id),
    constraint panel_change_type_check check (change_type in ('column_added', 'column_removed',
        'column_modified', 'source_changed', 'cohort_changed', 'view_published', 'view_unpublished')),
    constraint panel_change_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade
);
create index panel_change_panel_idx on panel_change (tenant_id, panel_id, id desc);
create index panel_change_tenant_idx on panel_change (tenant_id, id desc);

create table view_notification (
    id               bigint generated always as identity primary key,
    tenant_id        text not null,
    view_id          bigint not null,
    panel_change_id  bigint,
    user_email       text not null,
    impact           text not null,
    message          text not null,
    status           text not null default 'pending',
    acknowledged_at  timestamptz,
    created_at       timestamptz not null default now(),
    constraint view_notification_impact_check check (impact in ('breaking', 'warning', 'info')),
    constraint view_notification_status_check check (status in ('pending', 'acknowledged', 'resolved')),
    constraint view_notification_view_fkey foreign key (tenant_id, view_id) references view (tenant_id, id) on delete cascade,
    constraint view_notification_change_fkey foreign key (tenant_id, panel_change_id)
        references panel_change (tenant_id, id) on delete set null (panel_change_id)
);
create index view_notification_user_idx on view_notification (tenant_id, user_email, status, id desc);
create index view_notification_view_idx on view_notification (tenant_id, view_id);
create index view_notification_change_idx on view_notification (tenant_id, panel_change_id);

-- ACLs reference panels and views polymorphically (no foreign key); triggers below remove the
-- entries of a deleted resource in the same transaction.
create table access_control_lists (
    id             bigint generated always as identity primary key,
    tenant_id      text not null,
    resource_type  text not null,
    resource_id    bigint not null,
    user_email     text not null,
    permission     text not null,
    version        integer not null default 1,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    constraint acl_unique_entry unique (tenant_id, resource_type, resource_id, user_email),
    constraint acl_resource_type_check check (resource_type in ('panel', 'view')),
    constraint acl_permission_check check (permission in ('viewer', 'editor', 'owner')),
    constraint acl_email_lower check (user_email = lower(user_email))
);
create index acl_user_idx on access_control_lists (tenant_id, user_email, resource_type);
create trigger acl_touch before update on access_control_lists for each row execute function touch_row();

create function delete_resource_acls() returns trigger language plpgsql as $$
begin
    delete from access_control_lists
     where tenant_id = old.tenant_id and resource_type = tg_argv[0] and resource_id = old.id;
    return old;
end
$$;
create trigger panel_acls_cleanup after delete on panel for each row execute function delete_resource_acls('panel');
create trigger view_acls_cleanup after delete on view for each row execute function delete_resource_acls('view');

-- Replays of POST creates sent with an Idempotency-Key.
create table idempotency_key (
    tenant_id     text not null,
    principal     text not null,
    key           text not null,
    request_hash  bytea not null,
    status        smallint,
    response      jsonb,
    created_at    timestamptz not null default now(),
    constraint idempotency_key_pkey primary key (tenant_id, principal, key),
    constraint idempotency_key_length check (char_length(key) <= 255)
);
create index idempotency_key_created_idx on idempotency_key (created_at);

do $$
declare t text;
begin
    foreach t in array array['panel', 'data_source', 'panel_column', 'view', 'view_sort', 'panel_change',
                             'view_notification', 'access_control_lists', 'idempotency_key'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy tenant_isolation on %I using (tenant_id = app_tenant()) with check (tenant_id = app_tenant())', t);
    end loop;
end
$$;

grant select, insert, update, delete on all tables in schema public to panels_app;
grant usage, select on all sequences in schema public to panels_app;
