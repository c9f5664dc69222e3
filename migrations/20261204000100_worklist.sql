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
