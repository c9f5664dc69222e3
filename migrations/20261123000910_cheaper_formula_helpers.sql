-- The hottest formula helpers, made cheap to call.
--
-- PostgreSQL inlines a SQL function into the calling query only when nothing stops it; one
-- thing that does is STRICT on a function whose body is a CASE (the planner cannot prove the
-- body is null for null input). Called rather than inlined, each helper costs an executor
-- start per value: a 50-row page of 10 base and 5 calculated columns made ~2,000 such calls
-- and took 9.5 ms of database time (measured on the benchmark's data).
--
-- The JSON readers below already answer null for a null argument through their own bodies
-- (a CASE on jsonb_typeof, which is null for null), so dropping STRICT changes no result and
-- lets them inline: their argument is a column read, cheap enough for the planner to copy into
-- each use. The arithmetic guards go the other way (see below). The formula differential test
-- checks the compiled SQL against the in-process evaluator over random formulas and rows,
-- blanks included.

-- Text of a JSON array, elements joined by ", " (JSON nulls skipped; an empty array is null).
-- Only arrays reach it. A loop of simple expressions rather than a subquery: ~15 µs a call
-- as a string_agg over jsonb_array_elements_text (measured with track_functions), a few as this.
create or replace function panels_jsonb_array_text(v jsonb) returns text
language plpgsql immutable strict parallel safe as $$
declare
    joined text;
    item text;
begin
    for i in 0 .. jsonb_array_length(v) - 1 loop
        item := v ->> i;
        if item is not null then
            joined := case when joined is null then item else joined || ', ' || item end;
        end if;
    end loop;
    return joined;
end $$;

-- Whether y-m-d is a calendar date in years 1..9999, by arithmetic (the first version built a
-- date and added an interval: ~3 µs a call; every date read calls it).
create or replace function panels_valid_ymd(y int, m int, d int) returns boolean
language plpgsql immutable strict parallel safe as $$
begin
    return y between 1 and 9999 and m between 1 and 12 and d >= 1
       and d <= case
                    when m in (4, 6, 9, 11) then 30
                    when m <> 2 then 31
                    when (y % 4 = 0 and y % 100 <> 0) or y % 400 = 0 then 29
                    else 28
                end;
end $$;

create or replace function panels_jsonb_text(v jsonb) returns text
language sql immutable parallel safe as $$
    select case jsonb_typeof(v)
        when 'string' then v #>> '{}'
        when 'number' then v #>> '{}'
        when 'boolean' then v #>> '{}'
        when 'array' then panels_jsonb_array_text(v)
    end
$$;

-- A JSON number to float8 without the text round trip: null outside (1e-300, 1e300) in
-- magnitude, as panels_try_float8 decides for text.
create or replace function panels_numeric_float8(n numeric) returns float8
language sql immutable parallel safe as $$
    select case
        when n = 0 then 0::float8
        when abs(n) < 1e300 and abs(n) > 1e-300 then n::float8
    end
$$;

create or replace function panels_jsonb_float8(v jsonb) returns float8
language sql immutable parallel safe as $$
    select case jsonb_typeof(v)
        when 'number' then panels_numeric_float8(v::numeric)
        when 'string' then panels_try_float8(v #>> '{}')
    end
$$;

create or replace function panels_jsonb_bool(v jsonb) returns boolean
language sql immutable parallel safe as $$
    select case jsonb_typeof(v)
        when 'boolean' then v = 'true'::jsonb
        when 'string' then panels_try_bool(v #>> '{}')
    end
$$;

create or replace function panels_jsonb_date(v jsonb) returns date
language sql stable parallel safe as $$
    select case when jsonb_typeof(v) = 'string' then panels_try_date(v #>> '{}') end
$$;

create or replace function panels_jsonb_timestamptz(v jsonb) returns timestamptz
language sql stable parallel safe as $$
    select case when jsonb_typeof(v) = 'string' then panels_try_timestamptz(v #>> '{}') end
$$;

-- The arithmetic guards use each operand several times, and an operand is usually an
-- expression of its own (a column read, another formula), too costly for the planner to copy:
-- as SQL they were never inlined, and a called SQL function costs ~4 µs. As plpgsql the whole
-- body is one simple expression, evaluated in ~1 µs (both measured over 20,000 rows).
create or replace function panels_add(a float8, b float8) returns float8
language plpgsql immutable strict parallel safe as $$
begin
    return case
        when (abs(a) <= 8e307::float8 and abs(b) <= 8e307::float8) or ((a >= 0) <> (b >= 0))
            then a + b
    end;
end $$;

create or replace function panels_sub(a float8, b float8) returns float8
language plpgsql immutable strict parallel safe as $$
begin
    return panels_add(a, -b);
end $$;

create or replace function panels_mul(a float8, b float8) returns float8
language plpgsql immutable strict parallel safe as $$
begin
    return case
        when a = 0 or b = 0 then a * b
        when abs(a) >= 1 and abs(b) >= 1 then
            case when abs(a) <= 1e300::float8 / abs(b) then a * b end
        when abs(a) < 1 and abs(b) < 1 then
            case when abs(a) >= 1e-300::float8 / abs(b) then a * b end
        else a * b
    end;
end $$;

create or replace function panels_div(a float8, b float8) returns float8
language plpgsql immutable strict parallel safe as $$
begin
    return case
        when b = 0 then null
        when a = 0 then a / b
        when abs(b) >= 1 then
            case when abs(a) >= 1e-300::float8 * abs(b) then a / b end
        else
            case when abs(a) <= 1e300::float8 * abs(b) then a / b end
    end;
end $$;

create or replace function panels_upper(t text) returns text
language sql immutable parallel safe as $$
    select upper(t collate "und-x-icu")
$$;

create or replace function panels_lower(t text) returns text
language sql immutable parallel safe as $$
    select lower(t collate "und-x-icu")
$$;
