-- The audit benchmark's log (scripts/bench-audit): :entries entries over :tenants organisations
-- and the last three months, as the database's owner. Entries are written sealed, with hashes of
-- the right size (a valid chain is not what the query's speed depends on; sealing ten million
-- entries one by one would take most of half an hour). Entities: 5,000 per
-- kind and organisation, kinds panel, view, column, datasource (each organisation's entries
-- cycle through them); actors: 200 per organisation.
\set ON_ERROR_STOP on
select audit_maintain(36500);
do $$
declare m date;
begin
    for i in 1..3 loop
        m := (date_trunc('month', now() at time zone 'UTC') - make_interval(months => i))::date;
        if to_regclass('public.audit_entry_' || to_char(m, 'YYYYMM')) is null then
            execute format('create table public.%I partition of audit_entry for values from (%L) to (%L)',
                'audit_entry_' || to_char(m, 'YYYYMM'), m::timestamp at time zone 'UTC',
                (m + interval '1 month')::timestamp at time zone 'UTC');
            perform audit_protect('audit_entry_' || to_char(m, 'YYYYMM'));
        end if;
    end loop;
end $$;
insert into audit_entry (tenant_id, seq, at, actor_type, actor_id, actor_email, action, method,
                         route, status, entity_type, entity_id, panel_id, request_id, ip,
                         user_agent, changes, prev_hash, hash)
select 'bench-' || (g % :tenants),
       g / :tenants,
       now() - (random() * interval '85 days'),
       'user',
       (g % 200)::text,
       'user' || (g % 200) || '@bench.example',
       (array['panel', 'view', 'column', 'datasource'])[1 + (g / :tenants) % 4] || '.update',
       'PUT',
       '/api/' || (array['panels', 'views', 'columns', 'datasources'])[1 + (g / :tenants) % 4] || '/{id}',
       200,
       (array['panel', 'view', 'column', 'datasource'])[1 + (g / :tenants) % 4],
       (1 + (g / :tenants / 4) % 5000)::text,
       1 + (g / :tenants / 4) % 5000,
       gen_random_uuid()::text,
       '10.0.' || (g % 250) || '.' || (g % 200),
       'Mozilla/5.0 (bench)',
       jsonb_build_object('name', jsonb_build_object('from', 'Ward ' || g, 'to', 'Ward ' || (g + 1))),
       sha256(int8send(g - 1)),
       sha256(int8send(g))
  from generate_series(1, :entries) g;
analyze audit_entry;
