-- Requests in one round trip.
--
-- A request normally runs in a transaction opened with `begin; select set_config('app.tenant',
-- …, true)`, so row-level security knows its tenant: one round trip before the first query. The
-- hottest statements (a GET /api/panels/{id} cache miss here, creates in 0920) are plpgsql
-- functions that bind the tenant themselves and then run the request's SQL, so the request is
-- one statement in its own implicit transaction: the setting is transaction-local and ends with
-- the statement, exactly as with `begin`.
--
-- Called inside a transaction, they put the caller's setting back before returning, so they can
-- never leave a transaction bound to another tenant. They run as the caller (no security
-- definer): row-level security applies to their queries as to any other.

-- Binds `p_tenant` for the current transaction and answers the binding it replaced ('' for
-- none), for the caller to restore with set_config('app.tenant', <that>, true).
create function panels_bind_tenant(p_tenant text) returns text
language plpgsql volatile
as $$
declare
    previous text := coalesce(current_setting('app.tenant', true), '');
begin
    perform set_config('app.tenant', p_tenant, true);
    return previous;
end
$$;

create type panel_with_permission_row as (
    id bigint, tenant_id text, user_id text, name text, description text, cohort_rule jsonb,
    metadata jsonb, version integer, created_at timestamptz, updated_at timestamptz,
    permission text
);

-- A panel and the reader's highest ACL entry (by e-mail, legacy user id or tenant-wide);
-- p_email null (an admin) reads no entry. Plain SQL, so the planner inlines it into the query
-- that calls it: authorize() runs it inside the request's transaction, read_panel outside any.
create function panel_with_permission(p_tenant text, p_id bigint, p_email text, p_user text)
returns setof panel_with_permission_row
language sql stable
as $$
    select p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule, p.metadata,
           p.version, p.created_at, p.updated_at,
           (select a.permission from access_control_lists a
             where p_email is not null and a.tenant_id = p.tenant_id
               and a.resource_type = 'panel' and a.resource_id = p.id
               and a.user_email in (p_email, p_user, '_all')
             order by case a.permission when 'owner' then 3 when 'editor' then 2 else 1 end desc
             limit 1)
      from panel p
     where p.tenant_id = p_tenant and p.id = p_id
$$;

-- panel_with_permission in one statement of its own, tenant bound.
create function read_panel(p_tenant text, p_id bigint, p_email text, p_user text)
returns setof panel_with_permission_row
language plpgsql volatile
as $$
declare
    previous text := panels_bind_tenant(p_tenant);
begin
    return query select * from panel_with_permission(p_tenant, p_id, p_email, p_user);
    perform set_config('app.tenant', previous, true);
end
$$;
