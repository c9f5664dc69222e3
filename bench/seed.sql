-- The benchmark's dataset, written straight into the tables of migrations/ (run after
-- `panels migrate`, as the owner superuser, which row-level security does not bind).
--
--   100 tenants t001..t100 of Zipf-like size (tenant k holds rows in proportion to 1/k),
--   20 panels each, with one custom data source, 10 base and 5 calculated columns (formulas
--   with dependencies, one of them on another calculated column), 5 views each with 2 sorts
--   and a filter tree, owner ACL entries for the tenant's builder on every panel and view plus
--   3 viewer entries per panel, a short change history, and :rows panel_row rows.
--
-- Ids are explicit and dense so the driver can compute them: panel p (1..20) of tenant k has
-- id (k-1)*20 + p; its data source the same id; its columns (panel_id-1)*15 + 1..15; its views
-- (panel_id-1)*5 + 1..5. The identity sequences are moved past them at the end, so rows the
-- server creates later get fresh ids.
--
-- psql variables: rows (total panel rows, default 1000000 from scripts/bench), wl_rows (the rows
-- of the worklist panel, default 1000000).

\set ON_ERROR_STOP on
set synchronous_commit = off;
set maintenance_work_mem = '256MB';

begin;

insert into tenants (id, name)
select format('t%s', lpad(k::text, 3, '0')), format('Bench tenant %s', k)
from generate_series(1, 100) k;

-- One builder per tenant (the tokens' subject) and a few colleagues; nobody logs in with these
-- (the password hash is not a valid PHC string), the login scenario registers its own user.
insert into users (tenant_id, email, name, password_hash, role)
select format('t%s', lpad(k::text, 3, '0')),
       format('%s@t%s.example', u.name, lpad(k::text, 3, '0')),
       initcap(u.name), '!', u.role
from generate_series(1, 100) k
cross join (values ('builder', 'builder'), ('admin', 'admin'), ('ann', 'user'), ('bob', 'user'), ('cy', 'user')) as u(name, role);

insert into panel (id, tenant_id, user_id, name, description, cohort_rule, metadata)
overriding system value
select (k - 1) * 20 + p,
       format('t%s', lpad(k::text, 3, '0')),
       'builder-' || k,
       format('Worklist %s of tenant %s', p, k),
       case when p % 3 = 0 then null else 'Patients due for a follow-up call this quarter' end,
       case when p % 2 = 0
            then '{"conditions": [{"field": "age", "operator": "gte", "value": 18}, {"field": "status", "operator": "in", "value": ["open", "pending"]}], "logic": "AND"}'::jsonb
            else '{"conditions": [], "logic": "AND"}'::jsonb end,
       jsonb_build_object('color', (array['blue', 'green', 'amber', 'red'])[1 + p % 4], 'pinned', p <= 3)
from generate_series(1, 100) k, generate_series(1, 20) p;

insert into data_source (id, tenant_id, panel_id, type, config)
overriding system value
select id, tenant_id, id, 'custom', '{"description": "records pushed by the hospital system"}'::jsonb
from panel;

-- Ten base columns over the record's fields, then five calculated ones.
create temporary table bench_column (n int, kind text, name text, type text, formula text, deps jsonb, result_type text) on commit drop;
insert into bench_column values
    (1, 'base', 'firstName', 'text', null, '[]', null),
    (2, 'base', 'lastName', 'text', null, '[]', null),
    (3, 'base', 'age', 'number', null, '[]', null),
    (4, 'base', 'email', 'text', null, '[]', null),
    (5, 'base', 'status', 'select', null, '[]', null),
    (6, 'base', 'score', 'number', null, '[]', null),
    (7, 'base', 'admittedAt', 'date', null, '[]', null),
    (8, 'base', 'active', 'boolean', null, '[]', null),
    (9, 'base', 'city', 'text', null, '[]', null),
    (10, 'base', 'tags', 'multi_select', null, '[]', null),
    (11, 'calculated', 'doubleAge', 'number', 'age * 2', '["age"]', 'number'),
    (12, 'calculated', 'fullName', 'text', 'CONCAT(firstName, " ", lastName)', '["firstName", "lastName"]', 'text'),
    (13, 'calculated', 'risk', 'text', 'IF(score > 50, "high", "low")', '["score"]', 'text'),
    (14, 'calculated', 'riskScore', 'number', 'doubleAge + score', '["doubleAge", "score"]', 'number'),
    (15, 'calculated', 'label', 'text', 'UPPER(fullName) & " (" & risk & ")"', '["fullName", "risk"]', 'text');

create temporary table bench_column_wl as select * from bench_column;

insert into panel_column (id, tenant_id, panel_id, kind, name, type, source_field, data_source_id, formula,
                          dependencies, result_type, properties, display_order)
overriding system value
select (p.id - 1) * 15 + c.n, p.tenant_id, p.id, c.kind, c.name, c.type,
       case when c.kind = 'base' then c.name end,
       case when c.kind = 'base' then p.id end,
       c.formula, c.deps, c.result_type,
       jsonb_build_object('display', jsonb_build_object('order', c.n - 1, 'width', 160)),
       c.n - 1
from panel p cross join bench_column c;

insert into view (id, tenant_id, panel_id, name, owner_user_id, owner_email, is_published, published_at,
                  published_by, visible_columns, filters)
overriding system value
select (p.id - 1) * 5 + v,
       p.tenant_id, p.id,
       format('View %s', v),
       p.user_id,
       format('builder@%s.example', p.tenant_id),
       v <= 2,
       case when v <= 2 then now() end,
       case when v <= 2 then p.user_id end,
       (select jsonb_agg(((p.id - 1) * 15 + n)::text order by n) from generate_series(1, 8 + v) n),
       case v % 3
           when 0 then '{"conditions": [{"field": "age", "operator": "gte", "value": 30}], "logic": "AND"}'::jsonb
           when 1 then '{"conditions": [{"field": "status", "operator": "eq", "value": "open"}, {"conditions": [{"field": "score", "operator": "gt", "value": 50}, {"field": "city", "operator": "contains", "value": "burg"}], "logic": "OR"}], "logic": "AND"}'::jsonb
           else '{"conditions": [{"field": "active", "operator": "eq", "value": true}, {"field": "tags", "operator": "contains", "value": "vip"}], "logic": "AND"}'::jsonb
       end
from panel p, generate_series(1, 5) v;

insert into view_sort (tenant_id, view_id, column_name, direction, "order")
select v.tenant_id, v.id, s.column_name, s.direction, s.ord
from view v
cross join (values ('riskScore', 'desc', 0), ('lastName', 'asc', 1)) as s(column_name, direction, ord);

insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
select tenant_id, 'panel', id, format('builder@%s.example', tenant_id), 'owner' from panel
union all
select p.tenant_id, 'panel', p.id, format('%s@%s.example', u, p.tenant_id), 'viewer'
from panel p cross join unnest(array['ann', 'bob', 'cy']) u
union all
select tenant_id, 'view', id, format('builder@%s.example', tenant_id), 'owner' from view;

insert into panel_change (tenant_id, panel_id, change_type, affected_column, description, changed_by, new_values)
select c.tenant_id, c.panel_id, 'column_added', c.name, format('Column "%s" added', c.name),
       format('builder@%s.example', c.tenant_id), jsonb_build_object('type', c.type)
from panel_column c where c.kind = 'calculated';

commit;

-- Typed slots for the base columns (as migration 20261204000100 gives the columns that exist;
-- src/rows/slots.rs), ready at once: the rows below are written with them, as the sink writes
-- them. The ten columns take t1 firstName, t2 lastName, n1 age, t3 email, t4 status, n2 score,
-- d1 admittedAt, b1 active, t5 city; tags (multiple choice) has none.
insert into panel_slot (tenant_id, panel_id, column_id, slot, state)
select tenant_id, panel_id, id, prefix || n, 'ready'
from (
    select c.tenant_id, c.panel_id, c.id, k.prefix, k.slots,
           row_number() over (partition by c.tenant_id, c.panel_id, k.prefix order by c.id) as n
    from panel_column c
    join (values ('number', 'n', 16), ('date', 'd', 8), ('datetime', 's', 8), ('boolean', 'b', 8),
                 ('text', 't', 16), ('select', 't', 16), ('user', 't', 16), ('file', 't', 16), ('custom', 't', 16))
         as k(type, prefix, slots) on k.type = c.type
    where c.kind = 'base' and c.panel_id < 5001
) placed
where n <= slots;

-- The rows: Zipf-like tenant sizes (weight 1/k, s = 1), split evenly over the tenant's panels.
-- Secondary indexes are dropped for the load and rebuilt once after it, which is much faster
-- than maintaining a GIN index row by row; the unique key and foreign keys stay.
drop index panel_row_data_gin;
drop index panel_row_panel_idx;

create temporary table bench_share as
-- Rounding down leaves a few rows over: the largest tenant takes them, so the total is exact.
with w as (select k, 1.0 / k as w from generate_series(1, 100) k),
     f as (select k, floor(:rows * w / sum(w) over ())::bigint as n from w),
     t as (select k, (n + case when k = 1 then :rows - sum(n) over () else 0 end)::bigint as n from f)
select p.id as panel_id, p.tenant_id,
       (t.n / 20 + case when (p.id - 1) % 20 < t.n % 20 then 1 else 0 end)::int as n
from t join panel p on p.tenant_id = format('t%s', lpad(t.k::text, 3, '0'));

insert into panel_row (tenant_id, panel_id, data_source_id, record_key, data, hash, t1, t2, n1, t3, t4, n2, d1, b1, t5)
select s.tenant_id, s.panel_id, s.panel_id, 'r' || i, d.data, sha256(convert_to(d.data::text, 'UTF8')),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'firstName')), ''),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'lastName')), ''),
       panels_jsonb_float8(d.data -> 'age'),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'email')), ''),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'status')), ''),
       panels_jsonb_float8(d.data -> 'score'),
       panels_jsonb_date(d.data -> 'admittedAt'),
       panels_jsonb_bool(d.data -> 'active'),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'city')), '')
from bench_share s
cross join lateral generate_series(1, s.n) i
cross join lateral (
    select jsonb_build_object(
        'firstName', (array['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Niklaus'])[1 + (i * 7 + s.panel_id) % 10],
        'lastName', (array['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Hamilton', 'Wirth'])[1 + (i * 13) % 10],
        'age', 18 + (i * 37 + s.panel_id) % 80,
        'email', format('patient%s.%s@example.org', s.panel_id, i),
        'status', (array['open', 'pending', 'closed', 'escalated'])[1 + i % 4],
        'score', round(((i * 7919) % 10000) / 100.0, 2),
        'admittedAt', to_char(date '2024-01-01' + (i % 700), 'YYYY-MM-DD'),
        'active', i % 5 <> 0,
        'city', (array['Hamburg', 'Berlin', 'Paris', 'Lyon', 'Madrid', 'Oslo', 'Edinburgh', 'Freiburg'])[1 + (i * 3) % 8],
        'tags', case i % 6 when 0 then '["vip", "diabetes"]'::jsonb when 1 then '["diabetes"]'::jsonb
                           when 2 then '[]'::jsonb else '["follow-up"]'::jsonb end
    ) as data
) d;

-- The worklist panel (bench/README.md, "Worklists"): one panel of :wl_rows rows of tenant `twl`,
-- 10 base columns of mixed types with realistic gaps (a few percent of each field missing or
-- empty) and the 5 calculated columns of every panel, with three views: v1 two filters and a
-- sort on a base column, v2 two filters and a sort on a calculated column, v3 every row by last
-- name (the export). Ids: panel and source 5001, columns 75001..75015, views 25001..25003.
insert into tenants (id, name) values ('twl', 'Bench worklist');
insert into users (tenant_id, email, name, password_hash, role)
values ('twl', 'builder@twl.example', 'Builder', '!', 'builder');
insert into panel (id, tenant_id, user_id, name, description, cohort_rule, metadata)
overriding system value
values (5001, 'twl', 'builder-wl', 'The big worklist', 'One million patients',
        '{"conditions": [], "logic": "AND"}', '{}');
insert into data_source (id, tenant_id, panel_id, type, config)
overriding system value
values (5001, 'twl', 5001, 'custom', '{"keyField": "id"}');
insert into panel_column (id, tenant_id, panel_id, kind, name, type, source_field, data_source_id, formula,
                          dependencies, result_type, properties, display_order)
overriding system value
select 75000 + c.n, 'twl', 5001, c.kind, c.name, c.type,
       case when c.kind = 'base' then c.name end,
       case when c.kind = 'base' then 5001 end,
       c.formula, c.deps, c.result_type,
       jsonb_build_object('display', jsonb_build_object('order', c.n - 1)), c.n - 1
from bench_column_wl c;
insert into panel_slot (tenant_id, panel_id, column_id, slot, state)
select tenant_id, panel_id, id, prefix || n, 'ready'
from (
    select c.tenant_id, c.panel_id, c.id, k.prefix, k.slots,
           row_number() over (partition by c.tenant_id, c.panel_id, k.prefix order by c.id) as n
    from panel_column c
    join (values ('number', 'n', 16), ('date', 'd', 8), ('datetime', 's', 8), ('boolean', 'b', 8),
                 ('text', 't', 16), ('select', 't', 16), ('user', 't', 16), ('file', 't', 16), ('custom', 't', 16))
         as k(type, prefix, slots) on k.type = c.type
    where c.kind = 'base' and c.panel_id = 5001
) placed
where n <= slots;
insert into view (id, tenant_id, panel_id, name, owner_user_id, owner_email, is_published, published_at,
                  published_by, visible_columns, filters)
overriding system value
values
    (25001, 'twl', 5001, 'Open adults by admission', 'builder-wl', 'builder@twl.example', true, now(), 'builder-wl',
     '["75001", "75002", "75003", "75005", "75006", "75007", "75013", "75014"]',
     '{"logic": "AND", "conditions": [{"field": "status", "operator": "in", "value": ["open", "pending"]}, {"field": "age", "operator": "gte", "value": 40}]}'),
    (25002, 'twl', 5001, 'Open active by risk', 'builder-wl', 'builder@twl.example', true, now(), 'builder-wl',
     '["75001", "75002", "75003", "75005", "75006", "75014", "75015"]',
     '{"logic": "AND", "conditions": [{"field": "status", "operator": "in", "value": ["open", "pending"]}, {"field": "active", "operator": "eq", "value": true}]}'),
    (25003, 'twl', 5001, 'Everyone', 'builder-wl', 'builder@twl.example', true, now(), 'builder-wl',
     '["75001", "75002", "75003", "75004", "75005", "75006", "75007", "75008", "75009", "75010", "75011", "75012", "75013", "75014", "75015"]',
     '{"logic": "AND", "conditions": []}');
insert into view_sort (tenant_id, view_id, column_name, direction, "order")
values ('twl', 25001, 'admittedAt', 'desc', 0),
       ('twl', 25002, 'riskScore', 'desc', 0),
       ('twl', 25003, 'lastName', 'asc', 0);
insert into access_control_lists (tenant_id, resource_type, resource_id, user_email, permission)
values ('twl', 'panel', 5001, 'builder@twl.example', 'owner'),
       ('twl', 'view', 25001, 'builder@twl.example', 'owner'),
       ('twl', 'view', 25002, 'builder@twl.example', 'owner'),
       ('twl', 'view', 25003, 'builder@twl.example', 'owner');

insert into panel_row (tenant_id, panel_id, data_source_id, record_key, data, hash, t1, t2, n1, t3, t4, n2, d1, b1, t5)
select 'twl', 5001, 5001, i::text, d.data, sha256(convert_to(d.data::text, 'UTF8')),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'firstName')), ''),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'lastName')), ''),
       panels_jsonb_float8(d.data -> 'age'),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'email')), ''),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'status')), ''),
       panels_jsonb_float8(d.data -> 'score'),
       panels_jsonb_date(d.data -> 'admittedAt'),
       panels_jsonb_bool(d.data -> 'active'),
       nullif(panels_lower(panels_jsonb_text(d.data -> 'city')), '')
from generate_series(1::bigint, :wl_rows) i
cross join lateral (
    select jsonb_strip_nulls(jsonb_build_object(
        'id', i,
        'firstName', case when i % 97 = 0 then '' else (array['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Niklaus', 'Émile', 'Zoë'])[1 + (i * 7) % 12] end,
        'lastName', (array['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Hamilton', 'Wirth'])[1 + (i * 13) % 10] || '-' || ((i * 7919) % 4999),
        'age', case when i % 20 = 0 then null else 18 + (i * 37) % 80 end,
        'email', case when i % 50 = 0 then null else format('patient%s@example.org', i) end,
        'status', case when i % 45 = 0 then null else (array['open', 'pending', 'closed', 'escalated', 'closed'])[1 + (i * 3) % 5] end,
        'score', case when i % 10 = 3 then null else round(((i * 7919) % 10000) / 100.0, 2) end,
        'admittedAt', case when i % 33 = 0 then null else to_char(date '2020-01-01' + ((i * 17) % 2500)::int, 'YYYY-MM-DD') end,
        'active', case when i % 25 = 0 then null else (i * 11) % 3 <> 0 end,
        'city', case when i % 12 = 5 then null else (array['Amsterdam', 'Hamburg', 'Rotterdam', 'Utrecht', 'Edinburgh', 'Gothenburg', 'Leiden', 'Delft'])[1 + (i * 11) % 8] end,
        'tags', case i % 6 when 0 then '["vip", "diabetes"]'::jsonb when 1 then '["diabetes"]'::jsonb
                           when 2 then '[]'::jsonb else '["follow-up"]'::jsonb end
    )) as data
) d;

create index panel_row_panel_idx on panel_row (tenant_id, panel_id, id);
create index panel_row_data_gin on panel_row using gin (data jsonb_path_ops);

-- Later inserts by the server must not collide with the explicit ids above.
select setval(pg_get_serial_sequence('panel', 'id'), (select max(id) from panel));
select setval(pg_get_serial_sequence('data_source', 'id'), (select max(id) from data_source));
select setval(pg_get_serial_sequence('panel_column', 'id'), (select max(id) from panel_column));
select setval(pg_get_serial_sequence('view', 'id'), (select max(id) from view));

vacuum (analyze) ;
