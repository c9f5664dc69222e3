-- Helper functions for compiled formulas (src/formula, docs/formulas.md).
--
-- A compiled formula must never raise, whatever the data: PostgreSQL raises on float8
-- overflow/underflow, division by zero, invalid casts and out-of-range dates, so every such
-- operation goes through a helper here that returns null instead. Each helper is mirrored
-- operation by operation in Rust (src/formula/num.rs and datetime.rs) so the in-process
-- evaluator gives the same values. The guards compare against thresholds well inside the
-- float8 range (1e300, 8e307) so the checks themselves cannot overflow.
--
-- Plain SQL helpers are written to be inlinable; parsing helpers are plpgsql for clarity.
-- Anything that depends on the session (time zone, extra_float_digits) is pinned or marked
-- stable; nothing here reads now().

-- ---- reading source values -------------------------------------------------------------

-- Decimal text to float8: optional sign, digits with an optional point, an exponent of at
-- most three digits, surrounding spaces. The value goes through numeric so the range check
-- happens before the float8 cast (which would raise on overflow).
create or replace function panels_try_float8(t text) returns float8
language plpgsql immutable strict parallel safe as $$
declare
    n numeric;
begin
    if length(t) > 1000
       or t !~ '^ *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})? *$' then
        return null;
    end if;
    n := t::numeric;
    if n = 0 then
        return 0;
    end if;
    if abs(n) >= 1e300 or abs(n) <= 1e-300 then
        return null;
    end if;
    return n::float8;
end $$;

create or replace function panels_try_bool(t text) returns boolean
language sql immutable strict parallel safe as $$
    select case
        when t in ('true', 'TRUE', 'True') then true
        when t in ('false', 'FALSE', 'False') then false
    end
$$;

-- A valid calendar date in years 1..9999 (make_date raises on invalid ones).
create or replace function panels_valid_ymd(y int, m int, d int) returns boolean
language plpgsql immutable strict parallel safe as $$
begin
    if y < 1 or y > 9999 or m < 1 or m > 12 or d < 1 then
        return false;
    end if;
    return d <= extract(day from make_date(y, m, 1) + interval '1 month' - interval '1 day');
end $$;

-- YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]][Z|±HH:MM]]; no offset means UTC. Stable rather than
-- immutable because casts to timestamptz are.
create or replace function panels_try_timestamptz(t text) returns timestamptz
language plpgsql stable strict parallel safe as $$
declare
    m text[];
    ts timestamp;
    off interval := interval '0';
begin
    m := regexp_match(t, '^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$');
    if m is null or not panels_valid_ymd(m[1]::int, m[2]::int, m[3]::int) then
        return null;
    end if;
    if m[4] is null then
        return make_date(m[1]::int, m[2]::int, m[3]::int)::timestamp at time zone 'UTC';
    end if;
    if m[4]::int > 23 or m[5]::int > 59 or coalesce(m[6], '0')::int > 59 then
        return null;
    end if;
    if m[8] is not null and m[8] <> 'Z' then
        if substr(m[8], 2, 2)::int > 14 or substr(m[8], 5, 2)::int > 59 then
            return null;
        end if;
        off := make_interval(hours => substr(m[8], 2, 2)::int, mins => substr(m[8], 5, 2)::int);
        if substr(m[8], 1, 1) = '-' then
            off := -off;
        end if;
    end if;
    -- Whole microseconds as an integer multiple: no float rounding.
    ts := make_timestamp(m[1]::int, m[2]::int, m[3]::int, m[4]::int, m[5]::int,
                         coalesce(m[6], '0')::int)
          + interval '1 microsecond' * coalesce(rpad(m[7], 6, '0'), '0')::bigint;
    return (ts at time zone 'UTC') - off;
end $$;

-- YYYY-MM-DD, or a datetime taken as its UTC date.
create or replace function panels_try_date(t text) returns date
language plpgsql stable strict parallel safe as $$
begin
    if t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' then
        if panels_valid_ymd(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int) then
            return t::date;
        end if;
        return null;
    end if;
    return (panels_try_timestamptz(t) at time zone 'UTC')::date;
end $$;

-- JSONB readers for ColumnSql: a value of the wrong JSON type is null.
create or replace function panels_jsonb_text(v jsonb) returns text
language sql immutable strict parallel safe as $$
    select case jsonb_typeof(v)
        when 'string' then v #>> '{}'
        when 'number' then v #>> '{}'
        when 'boolean' then v #>> '{}'
        when 'array' then (
            select string_agg(e.value, ', ' order by e.ordinality)
            from jsonb_array_elements_text(v) with ordinality as e(value, ordinality)
        )
    end
$$;

create or replace function panels_jsonb_float8(v jsonb) returns float8
language sql immutable strict parallel safe as $$
    select case when jsonb_typeof(v) in ('number', 'string') then panels_try_float8(v #>> '{}') end
$$;

create or replace function panels_jsonb_bool(v jsonb) returns boolean
language sql immutable strict parallel safe as $$
    select case jsonb_typeof(v)
        when 'boolean' then v = 'true'::jsonb
        when 'string' then panels_try_bool(v #>> '{}')
    end
$$;

create or replace function panels_jsonb_date(v jsonb) returns date
language sql stable strict parallel safe as $$
    select case when jsonb_typeof(v) = 'string' then panels_try_date(v #>> '{}') end
$$;

create or replace function panels_jsonb_timestamptz(v jsonb) returns timestamptz
language sql stable strict parallel safe as $$
    select case when jsonb_typeof(v) = 'string' then panels_try_timestamptz(v #>> '{}') end
$$;

-- ---- numbers ---------------------------------------------------------------------------

create or replace function panels_add(a float8, b float8) returns float8
language sql immutable strict parallel safe as $$
    select case
        when (abs(a) <= 8e307::float8 and abs(b) <= 8e307::float8) or ((a >= 0) <> (b >= 0))
            then a + b
    end
$$;

create or replace function panels_sub(a float8, b float8) returns float8
language sql immutable strict parallel safe as $$
    select panels_add(a, -b)
$$;

create or replace function panels_mul(a float8, b float8) returns float8
language sql immutable strict parallel safe as $$
    select case
        when a = 0 or b = 0 then a * b
        when abs(a) >= 1 and abs(b) >= 1 then
            case when abs(a) <= 1e300::float8 / abs(b) then a * b end
        when abs(a) < 1 and abs(b) < 1 then
            case when abs(a) >= 1e-300::float8 / abs(b) then a * b end
        else a * b
    end
$$;

create or replace function panels_div(a float8, b float8) returns float8
language sql immutable strict parallel safe as $$
    select case
        when b = 0 then null
        when a = 0 then a / b
        when abs(b) >= 1 then
            case when abs(a) >= 1e-300::float8 * abs(b) then a / b end
        else
            case when abs(a) <= 1e300::float8 * abs(b) then a / b end
    end
$$;

-- The result has the sign of the divisor, as in spreadsheets.
create or replace function panels_mod(a float8, b float8) returns float8
language sql immutable strict parallel safe as $$
    select panels_sub(a, panels_mul(b, floor(panels_div(a, b))))
$$;

-- power() raises for 0^negative, negative^fraction, overflow and underflow; the exponent
-- bound keeps the result within about e^±690.
create or replace function panels_power(a float8, b float8) returns float8
language sql immutable strict parallel safe as $$
    select case
        when a = 0 then case when b > 0 then 0::float8 when b = 0 then 1::float8 end
        when a < 0 and floor(b) <> b then null
        when abs(a) = 1 then power(a, b)
        when abs(b) <= 690::float8 / abs(ln(abs(a))) then power(a, b)
    end
$$;

create or replace function panels_sqrt(x float8) returns float8
language sql immutable strict parallel safe as $$
    select case when x >= 0 then sqrt(x) end
$$;

create or replace function panels_ln(x float8) returns float8
language sql immutable strict parallel safe as $$
    select case when x > 0 then ln(x) end
$$;

create or replace function panels_log10(x float8) returns float8
language sql immutable strict parallel safe as $$
    select case when x > 0 then log(x) end
$$;

create or replace function panels_exp(x float8) returns float8
language sql immutable strict parallel safe as $$
    select case when x between -700 and 700 then exp(x) end
$$;

-- An integer argument (count, position): truncated and clamped so int4 arithmetic in
-- left/substr/overlay/repeat cannot overflow.
create or replace function panels_int(x float8) returns int
language sql immutable strict parallel safe as $$
    select trunc(greatest(-1e9::float8, least(1e9::float8, x)))::int
$$;

-- Decimal rounding as spreadsheets do it. float8 -> numeric goes through 15 significant
-- digits, so ROUND(2.675, 2) is 2.68; round(numeric) is half away from zero (unlike
-- round(float8), which rounds half to even). mode: 0 = ROUND, 1 = ROUNDUP (away from
-- zero), 2 = ROUNDDOWN (toward zero).
create or replace function panels_round(x float8, d float8, mode int) returns float8
language plpgsql immutable strict parallel safe as $$
declare
    s int;
    n numeric;
    r numeric;
begin
    if abs(x) >= 1e300 then
        return null;
    end if;
    s := trunc(greatest(-330::float8, least(330::float8, d)))::int;
    n := x::numeric;
    if mode = 0 then
        r := round(n, s);
    else
        r := trunc(n, s);
        if mode = 1 and r <> n then
            r := r + sign(n) * power(10::numeric, -s);
        end if;
    end if;
    if r = 0 then
        return 0;
    end if;
    if abs(r) >= 1e300 or abs(r) <= 1e-300 then
        return null;
    end if;
    return r::float8;
end $$;

-- Blank values are skipped; the running sum follows the `+` rules.
create or replace function panels_average(variadic xs float8[]) returns float8
language plpgsql immutable parallel safe as $$
declare
    s float8;
    n int := 0;
    x float8;
begin
    foreach x in array xs loop
        if x is not null then
            s := panels_add(coalesce(s, 0), x);
            n := n + 1;
        end if;
    end loop;
    if n = 0 then
        return null;
    end if;
    return panels_div(coalesce(s, 0), n);
end $$;

-- ---- text ------------------------------------------------------------------------------

-- Shortest round-trip output (the PostgreSQL 12+ default), pinned so a session setting of
-- extra_float_digits cannot change formula results.
create or replace function panels_float8_text(x float8) returns text
language sql immutable strict parallel safe
set extra_float_digits = 1 as $$
    select x::text
$$;

create or replace function panels_bool_text(b boolean) returns text
language sql immutable strict parallel safe as $$
    select case when b then 'TRUE' else 'FALSE' end
$$;

create or replace function panels_date_text(d date) returns text
language sql immutable strict parallel safe as $$
    select to_char(d, 'YYYY-MM-DD')
$$;

create or replace function panels_timestamptz_text(t timestamptz) returns text
language sql immutable strict parallel safe as $$
    select to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- Full Unicode case mapping (ICU root locale, as Rust's to_uppercase), whatever the
-- database's collation; wrapped in a function so the explicit collation does not leak into
-- the caller's expression (where it would clash with collate "C" comparisons).
create or replace function panels_upper(t text) returns text
language sql immutable strict parallel safe as $$
    select upper(t collate "und-x-icu")
$$;

create or replace function panels_lower(t text) returns text
language sql immutable strict parallel safe as $$
    select lower(t collate "und-x-icu")
$$;

create or replace function panels_ends_with(t text, s text) returns boolean
language sql immutable strict parallel safe as $$
    select right(t, length(s)) = s
$$;

-- repeat() of a huge count exhausts memory; results are capped at 10000 characters.
create or replace function panels_rept(t text, n int) returns text
language sql immutable parallel safe as $$
    select case
        when t is null then null
        when n <= 0 then ''
        when length(t)::bigint * n > 10000 then null
        else repeat(t, n)
    end
$$;

-- ---- dates -----------------------------------------------------------------------------

create or replace function panels_make_date(y float8, m float8, d float8) returns date
language plpgsql immutable strict parallel safe as $$
begin
    if trunc(y) < 1 or trunc(y) > 9999 or trunc(m) < 1 or trunc(m) > 12 or trunc(d) < 1
       or trunc(d) > 31 then
        return null;
    end if;
    if not panels_valid_ymd(trunc(y)::int, trunc(m)::int, trunc(d)::int) then
        return null;
    end if;
    return make_date(trunc(y)::int, trunc(m)::int, trunc(d)::int);
end $$;

-- n whole units of per days, kept within 0001-01-01..9999-12-31 (checked in integers
-- before adding, since date + int raises outside PostgreSQL's range).
create or replace function panels_date_add_days(d date, n float8, per int) returns date
language plpgsql immutable strict parallel safe as $$
declare
    k int;
    o int;
begin
    if abs(trunc(n)) > 3700000::float8 / per then
        return null;
    end if;
    k := trunc(n)::int * per;
    o := (d - date '0001-01-01') + k;
    if o < 0 or o > date '9999-12-31' - date '0001-01-01' then
        return null;
    end if;
    return d + k;
end $$;

-- n whole units of per months; the day is clamped to the end of a shorter month.
create or replace function panels_date_add_months(d date, n float8, per int) returns date
language plpgsql immutable strict parallel safe as $$
declare
    k int;
    idx bigint;
begin
    if abs(trunc(n)) > 130000::float8 / per then
        return null;
    end if;
    k := trunc(n)::int * per;
    idx := extract(year from d)::bigint * 12 + extract(month from d)::bigint - 1 + k;
    if idx < 12 or idx > 9999 * 12 + 11 then
        return null;
    end if;
    return (d + make_interval(months => k))::date;
end $$;

create or replace function panels_ts_add_months(t timestamp, n float8, per int) returns timestamp
language plpgsql immutable strict parallel safe as $$
declare
    k int;
    idx bigint;
begin
    if abs(trunc(n)) > 130000::float8 / per then
        return null;
    end if;
    k := trunc(n)::int * per;
    idx := extract(year from t)::bigint * 12 + extract(month from t)::bigint - 1 + k;
    if idx < 12 or idx > 9999 * 12 + 11 then
        return null;
    end if;
    return t + make_interval(months => k);
end $$;

-- n whole units of per seconds on UTC wall-clock time, in integer arithmetic (days plus
-- remaining seconds) so no float rounding creeps into the microseconds.
create or replace function panels_ts_add_seconds(t timestamp, n float8, per int) returns timestamp
language plpgsql immutable strict parallel safe as $$
declare
    secs bigint;
    e numeric;
begin
    if abs(trunc(n)) > 3.2e11::float8 / per then
        return null;
    end if;
    secs := trunc(n)::bigint * per;
    e := extract(epoch from t) + secs;
    if e < extract(epoch from timestamp '0001-01-01')
       or e >= extract(epoch from timestamp '10000-01-01') then
        return null;
    end if;
    return t + make_interval(days => (secs / 86400)::int, secs => (secs % 86400)::float8);
end $$;

-- Whole units of per_micros microseconds from b to a, truncated toward zero.
create or replace function panels_datediff_micros(a timestamp, b timestamp, per_micros bigint)
returns float8
language sql immutable strict parallel safe as $$
    select (((extract(epoch from a) - extract(epoch from b)) * 1000000)::bigint / per_micros)::float8
$$;

-- Complete months from b to a (a month is complete once the day and time of month are
-- reached again), in units of per months.
create or replace function panels_datediff_months(a timestamp, b timestamp, per int)
returns float8
language plpgsql immutable strict parallel safe as $$
declare
    k bigint;
    ra interval;
    rb interval;
begin
    k := (extract(year from a)::bigint * 12 + extract(month from a)::bigint)
       - (extract(year from b)::bigint * 12 + extract(month from b)::bigint);
    ra := a - date_trunc('month', a);
    rb := b - date_trunc('month', b);
    if k > 0 and ra < rb then
        k := k - 1;
    elsif k < 0 and ra > rb then
        k := k + 1;
    end if;
    return (k / per)::float8;
end $$;
