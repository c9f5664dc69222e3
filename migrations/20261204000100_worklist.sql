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
