-- The worklist engine (src/rows): formulas whose failures blank the whole cell.

-- AVERAGE: a running sum out of range fails the average (NULL from non-blank arguments), as a
-- step of SUM does; before, the sum started again from 0 and the average came out a number.
create or replace function panels_average(variadic xs float8[]) returns float8
language plpgsql immutable parallel safe as $$
declare
    s float8 := 0;
    n int := 0;
    x float8;
begin
    foreach x in array xs loop
        if x is not null then
            s := panels_add(s, x);
            if s is null then
                return null;
            end if;
            n := n + 1;
        end if;
    end loop;
    if n = 0 then
        return null;
    end if;
    return panels_div(s, n);
end $$;

-- A multiple-choice field as filters read it: its choices in lower case (an array's items that
-- are text, numbers or booleans; a lone value is a list of one), never NULL. Mirrors
-- `filter::eval::Cell::list_from_json` with Unicode lower case (ICU's root locale, as Rust's).
create or replace function panels_jsonb_list(v jsonb) returns text[]
language plpgsql immutable parallel safe as $$
declare
    items text[] := '{}';
    item jsonb;
begin
    case jsonb_typeof(v)
        when 'array' then
            for i in 0 .. jsonb_array_length(v) - 1 loop
                item := v -> i;
                if jsonb_typeof(item) in ('string', 'number', 'boolean') then
                    items := items || panels_lower(item #>> '{}');
                end if;
            end loop;
        when 'string', 'number', 'boolean' then
            items := array[panels_lower(v #>> '{}')];
        else
            null;
    end case;
    return items;
end $$;

grant execute on function panels_jsonb_list(jsonb) to panels_app, panels_auth, panels_worker;
revoke all on function panels_jsonb_list(jsonb) from public;

-- Indexes the worklist engine wants: a view's sort keys, the fields its filters and the cohort
-- rule test, as the rows query writes them (src/rows/indexes.rs). A request records what its
-- query could use; a worker builds it (create index concurrently, as the table's owner, partial
-- to the panel) and drops the ones nobody wanted for a while. The definition is the SQL of the
-- index's columns with every value a quoted literal, signed by the server (`signature`, an HMAC
-- under a key the database never holds): the owner builds only what the server wrote.
create table panel_index (
    tenant_id   text not null,
    panel_id    bigint not null,
    name        text not null,
    definition  text not null,
    signature   text not null,
    state       text not null default 'wanted',
    wanted_at   timestamptz not null default now(),
    built_at    timestamptz,
    error       text,
    lease_until timestamptz,
    locked_by   text,
    created_at  timestamptz not null default now(),
    constraint panel_index_pkey primary key (tenant_id, panel_id, name),
    constraint panel_index_name_check check (name ~ '^panel_row_p[0-9]+_[0-9a-f]{16}$'),
    constraint panel_index_state_check check (state in ('wanted', 'building', 'ready', 'small', 'failed')),
    constraint panel_index_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade
);
-- The builder's queue, across tenants.
create index panel_index_work_idx on panel_index (state, wanted_at);

alter table panel_index enable row level security;
alter table panel_index force row level security;
create policy tenant_isolation on panel_index using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
create policy worker_all on panel_index to panels_worker using (true) with check (true);
grant select, update, delete on panel_index to panels_worker;

-- Claims the next index to build (wanted, a build whose worker's lease ran out, or a small panel's
-- to look at again after an hour), leasing it to `p_worker`.
create function claim_panel_index(p_worker text, p_lease_seconds integer)
    returns table (tenant_id text, panel_id bigint, name text, definition text, signature text)
    language sql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
    update panel_index i set state = 'building', locked_by = p_worker,
           lease_until = now() + make_interval(secs => p_lease_seconds)
    where (i.tenant_id, i.panel_id, i.name) = (
        select q.tenant_id, q.panel_id, q.name from panel_index q
        where q.state = 'wanted'
           or (q.state = 'building' and q.lease_until < now())
           or (q.state = 'small' and q.lease_until < now() - interval '1 hour')
        order by q.wanted_at
        for update skip locked
        limit 1)
    returning i.tenant_id, i.panel_id, i.name, i.definition, i.signature
    $$;

-- Records how a build ended: `ready`, `small` (the panel is too small to need it) or `failed`.
create function finish_panel_index(p_tenant text, p_panel bigint, p_name text, p_state text, p_error text)
    returns void
    language sql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
    update panel_index set state = p_state, error = p_error, lease_until = now(),
           built_at = case when p_state = 'ready' then now() else built_at end
    where tenant_id = p_tenant and panel_id = p_panel and name = p_name
    $$;

-- Indexes nobody wanted since `p_before` (or whose panel is gone): the builder drops them.
create function stale_panel_indexes(p_before timestamptz)
    returns table (tenant_id text, panel_id bigint, name text)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$ select i.tenant_id, i.panel_id, i.name from panel_index i where i.wanted_at < p_before $$;

create function forget_panel_index(p_tenant text, p_panel bigint, p_name text)
    returns void
    language sql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$ delete from panel_index where tenant_id = p_tenant and panel_id = p_panel and name = p_name $$;

-- Every index the builder keeps track of, across tenants (to drop the physical indexes of
-- panels that were deleted).
create function known_panel_indexes()
    returns table (name text)
    language sql stable security definer set search_path = pg_catalog, public, pg_temp
    as $$ select i.name from panel_index i $$;

do $$
declare f text;
begin
    foreach f in array array['claim_panel_index(text, integer)', 'finish_panel_index(text, bigint, text, text, text)',
                             'stale_panel_indexes(timestamptz)', 'forget_panel_index(text, bigint, text)',
                             'known_panel_indexes()'] loop
        execute format('alter function %s owner to panels_worker', f);
        execute format('revoke all on function %s from public', f);
        execute format('grant execute on function %s to panels_app, panels_worker', f);
    end loop;
end
$$;

-- Dates read from JSON can be indexed: the readers accept only ISO forms (YYYY-MM-DD, with an
-- explicit offset or UTC), so neither DateStyle nor TimeZone changes a result; they were marked
-- stable only because casts to date and timestamptz are in general.
alter function panels_try_timestamptz(text) immutable;
alter function panels_try_date(text) immutable;
alter function panels_jsonb_date(jsonb) immutable;
alter function panels_jsonb_timestamptz(jsonb) immutable;

-- Typed slots: a copy of each column's value, read as its type, in a column of its own on the
-- row (src/rows/slots.rs): a base column's as its JSON reader answers it, a calculated column's
-- cell when its formula does not read the clock. The rows query compares and sorts them with plain operators, which
-- PostgreSQL may use as index conditions under row-level security (it does not for the JSON
-- readers, which are not leakproof), and reads them without parsing the record. A panel's base
-- columns take slots of their type while there are free ones: numbers n1..n16, texts t1..t16
-- (in lower case, empty as NULL: what filters and sorts compare), dates d1..d8, datetimes
-- s1..s8, booleans b1..b8. The sink writes them with the record; a worker fills a new slot for
-- the rows already there, and until it is done the column is read from the record.
do $$
begin
    for i in 1 .. 16 loop
        execute format('alter table panel_row add column n%s float8', i);
        execute format('alter table panel_row add column t%s text', i);
    end loop;
    for i in 1 .. 8 loop
        execute format('alter table panel_row add column d%s date', i);
        execute format('alter table panel_row add column s%s timestamptz', i);
        execute format('alter table panel_row add column b%s boolean', i);
    end loop;
end
$$;

create table panel_slot (
    tenant_id   text not null,
    panel_id    bigint not null,
    column_id   bigint not null,
    slot        text not null,
    state       text not null default 'filling',
    -- Rows with an id up to this one are filled.
    filled_to   bigint not null default 0,
    -- A hash of the SQL that fills the slot ('' for a slot given here, adopted as it is).
    fill_hash   text not null default '',
    lease_until timestamptz,
    locked_by   text,
    created_at  timestamptz not null default now(),
    constraint panel_slot_pkey primary key (tenant_id, column_id),
    constraint panel_slot_slot_key unique (tenant_id, panel_id, slot),
    constraint panel_slot_state_check check (state in ('filling', 'ready')),
    constraint panel_slot_slot_check check (slot ~ '^[ntdsb][0-9]{1,2}$'),
    constraint panel_slot_panel_fkey foreign key (tenant_id, panel_id) references panel (tenant_id, id) on delete cascade,
    constraint panel_slot_column_fkey foreign key (tenant_id, column_id) references panel_column (tenant_id, id) on delete cascade
);
create index panel_slot_filling_idx on panel_slot (created_at) where state = 'filling';

alter table panel_slot enable row level security;
alter table panel_slot force row level security;
create policy tenant_isolation on panel_slot using (tenant_id = app_tenant()) with check (tenant_id = app_tenant());
create policy worker_claim on panel_slot to panels_worker using (true) with check (true);
grant select, update on panel_slot to panels_worker;

-- The columns that exist take their slots now; the workers fill them.
insert into panel_slot (tenant_id, panel_id, column_id, slot)
select tenant_id, panel_id, id, prefix || n
from (
    select c.tenant_id, c.panel_id, c.id, k.prefix, k.slots,
           row_number() over (partition by c.tenant_id, c.panel_id, k.prefix order by c.id) as n
    from panel_column c
    join (values ('number', 'n', 16), ('date', 'd', 8), ('datetime', 's', 8), ('boolean', 'b', 8),
                 ('text', 't', 16), ('select', 't', 16), ('user', 't', 16), ('file', 't', 16), ('custom', 't', 16))
         as k(type, prefix, slots) on k.type = c.type
    where c.kind = 'base'
) placed
where n <= slots;

-- Leases the filling slots of the panel that has waited longest to `p_worker`; answers the
-- panel (no row: nothing to fill).
create function claim_slot_fill(p_worker text, p_lease_seconds integer)
    returns table (tenant_id text, panel_id bigint)
    language sql volatile security definer set search_path = pg_catalog, public, pg_temp
    as $$
    with target as (
        select s.tenant_id, s.panel_id from panel_slot s
        where s.state = 'filling' and (s.lease_until is null or s.lease_until < now())
        order by s.created_at
        for update skip locked
        limit 1)
    update panel_slot s set locked_by = p_worker, lease_until = now() + make_interval(secs => p_lease_seconds)
    from target
    where s.tenant_id = target.tenant_id and s.panel_id = target.panel_id and s.state = 'filling'
    returning s.tenant_id, s.panel_id
    $$;

alter function claim_slot_fill(text, integer) owner to panels_worker;
revoke all on function claim_slot_fill(text, integer) from public;
grant execute on function claim_slot_fill(text, integer) to panels_app, panels_worker;
