-- Requests in one round trip.
--
-- A request normally runs in a transaction opened with `begin; select set_config('app.tenant',
-- …, true)`, so row-level security knows its tenant: one round trip before the first query. For
-- the hottest read (GET /api/panels/{id} on a cache miss) this function binds the tenant itself
-- and runs the read, so the request is one statement in its own implicit transaction: the
-- setting is transaction-local and ends with the statement, exactly as with `begin`.
--
-- Called inside a transaction, it puts the caller's setting back before it returns, so it can
-- never leave a transaction bound to another tenant. It runs as the caller (no security
-- definer): row-level security applies to its query as to any other.

create function read_panel(p_tenant text, p_id bigint, p_email text, p_user text)
returns table (
    id bigint, tenant_id text, user_id text, name text, description text, cohort_rule jsonb,
    metadata jsonb, version integer, created_at timestamptz, updated_at timestamptz,
    permission text
)
language plpgsql volatile
as $$
#variable_conflict use_column
declare
    previous text := current_setting('app.tenant', true);
begin
    perform set_config('app.tenant', p_tenant, true);
    -- The panel and the reader's highest ACL entry (by e-mail, legacy user id or tenant-wide);
    -- p_email null (an admin) reads no entry.
    return query
        select p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule, p.metadata,
               p.version, p.created_at, p.updated_at,
               (select a.permission from access_control_lists a
                 where p_email is not null and a.tenant_id = p.tenant_id
                   and a.resource_type = 'panel' and a.resource_id = p.id
                   and a.user_email in (p_email, p_user, '_all')
                 order by case a.permission when 'owner' then 3 when 'editor' then 2 else 1 end desc
                 limit 1)
          from panel p
         where p.tenant_id = p_tenant and p.id = p_id;
    perform set_config('app.tenant', coalesce(previous, ''), true);
end
$$;

-- POST /api/panels without an Idempotency-Key in one round trip: the panel and its owner's ACL
-- entry, in one statement whose implicit transaction commits them together.
create function create_panel(
    p_tenant text, p_user text, p_owner text, p_name text, p_description text,
    p_cohort_rule jsonb, p_metadata jsonb
)
returns table (
    id bigint, tenant_id text, user_id text, name text, description text, cohort_rule jsonb,
    metadata jsonb, version integer, created_at timestamptz, updated_at timestamptz
)
language plpgsql volatile
as $$
#variable_conflict use_column
declare
    previous text := current_setting('app.tenant', true);
begin
    perform set_config('app.tenant', p_tenant, true);
    return query
        with p as (
            insert into panel as p (tenant_id, user_id, name, description, cohort_rule, metadata)
            values (p_tenant, p_user, p_name, p_description, p_cohort_rule, p_metadata)
            returning p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule,
                      p.metadata, p.version, p.created_at, p.updated_at
        ), owner as (
            insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
            select p.tenant_id, 'panel', p.id, p_owner, 'owner' from p
        )
        select * from p;
    perform set_config('app.tenant', coalesce(previous, ''), true);
end
$$;
