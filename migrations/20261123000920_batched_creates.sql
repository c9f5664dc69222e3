-- Panel creates in one statement (src/panels/batch.rs).
--
-- Every `POST /api/panels` writes through this function: alone, or under load together with the
-- creates of the same tenant that queued meanwhile, committed together (one round trip and one
-- WAL flush for the group). Each panel gets its id up front from the table's own sequence, so
-- every caller is answered with its own row. Like read_panel (0900) it binds the tenant for its
-- statement's own transaction, puts a caller's binding back (the Idempotency-Key path runs it
-- inside the request's transaction), and runs as the caller under row-level security.
--
-- p_panels: a JSON array of {userId, owner, name, description, cohortRule, metadata}; the
-- answer carries each panel with its 1-based position in that array.

create function create_panels(p_tenant text, p_panels jsonb)
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
        )
        select i.ord, p.id, p.tenant_id, p.user_id, p.name, p.description, p.cohort_rule,
               p.metadata, p.version, p.created_at, p.updated_at
          from p join input i on i.new_id = p.id;
    perform set_config('app.tenant', previous, true);
end
$$;
