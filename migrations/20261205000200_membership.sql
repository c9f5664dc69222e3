-- Who is in a panel's cohort, and in each of its published views, as of the last evaluation
-- (src/rows/membership.rs). Each evaluation compares the rows the rule admits now with the rows
-- stored here and writes `cohort.entered` / `cohort.left` (`view.rows.entered` / `.left`) with
-- the difference, in the same transaction that moves the stored set: an entry or exit is told
-- exactly once.
--
-- A row deleted from the panel stays here until the next evaluation, which tells that it left
-- (no foreign key to panel_row on purpose).
create table row_membership (
    tenant_id text not null,
    panel_id  bigint not null,
    -- 0: the panel's cohort; otherwise the id of a published view of the panel.
    scope     bigint not null,
    row_id    bigint not null,
    constraint row_membership_pkey primary key (tenant_id, panel_id, scope, row_id),
    constraint row_membership_panel_fkey foreign key (tenant_id, panel_id)
        references panel (tenant_id, id) on delete cascade
);

-- One row per evaluated set: its first evaluation only records the members (nobody "entered" a
-- set that was never told before), and it serialises evaluations of the same set (the upsert
-- locks the row until the evaluating transaction ends).
create table membership_scope (
    tenant_id    text not null,
    panel_id     bigint not null,
    scope        bigint not null,
    evaluated_at timestamptz not null default now(),
    -- The rule reads a relative date (`today`, `-30d`): rows enter and leave as days pass, so the
    -- worker evaluates it again on a schedule (MEMBERSHIP_REFRESH_MS).
    relative     boolean not null default false,
    constraint membership_scope_pkey primary key (tenant_id, panel_id, scope),
    constraint membership_scope_panel_fkey foreign key (tenant_id, panel_id)
        references panel (tenant_id, id) on delete cascade
);
create index membership_scope_due_idx on membership_scope (evaluated_at) where relative;

alter table row_membership enable row level security;
alter table row_membership force row level security;
create policy tenant_isolation on row_membership
    using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
alter table membership_scope enable row level security;
alter table membership_scope force row level security;
create policy tenant_isolation on membership_scope
    using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
revoke all on row_membership, membership_scope from panels_app;
grant select, insert, update, delete on row_membership, membership_scope to panels_app;

-- A new panel's cohort is known from the start (empty): the rows its first sync brings are told
-- as entered. A statement trigger, so a grouped create (create_panels) inserts once per group.
create function membership_track_new_panels() returns trigger
    language plpgsql as $$
begin
    insert into membership_scope (tenant_id, panel_id, scope)
    select c.tenant_id, c.id, 0 from created c;
    return null;
end
$$;
create trigger panel_membership after insert on panel
    referencing new table as created
    for each statement execute function membership_track_new_panels();

-- Panels that exist already: an empty one is known to be empty; one with rows is recorded, not
-- told, at its first evaluation.
insert into membership_scope (tenant_id, panel_id, scope)
select p.tenant_id, p.id, 0 from panel p
 where not exists (select 1 from panel_row r where r.tenant_id = p.tenant_id and r.panel_id = p.id);

-- The panels whose rules read relative dates and were last evaluated before `p_before`, across
-- tenants, for the worker's schedule (it then evaluates each inside its tenant's transaction).
create function due_memberships(p_before timestamptz, p_limit integer)
    returns table (tenant_id text, panel_id bigint)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$
        select s.tenant_id, s.panel_id from membership_scope s
         where s.relative and s.evaluated_at < p_before
         group by s.tenant_id, s.panel_id
         order by min(s.evaluated_at)
         limit p_limit
    $$;
create policy worker_scan on membership_scope for select to panels_worker using (true);
grant select on membership_scope to panels_worker;
alter function due_memberships(timestamptz, integer) owner to panels_worker;
revoke all on function due_memberships(timestamptz, integer) from public;
grant execute on function due_memberships(timestamptz, integer) to panels_app, panels_worker;
