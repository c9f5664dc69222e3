-- Bounded formula values (src/formula/mod.rs, MAX_TEXT_BYTES): a text longer than 65,536 bytes is
-- a failure of its cell, never a value. The cap stands where text can grow (concatenation,
-- SUBSTITUTE, REPLACE) and on every text a formula reads, so no intermediate value of a row can
-- grow past it, however the formulas are nested.
--
-- plpgsql, never inlined: an inlinable SQL body would name its argument twice and PostgreSQL
-- would then copy the argument's expression into both places, doubling at every level of a
-- nested concatenation.

create or replace function panels_text_cap(t text) returns text
language plpgsql immutable strict parallel safe as $$
begin
    return case when octet_length(t) <= 65536 then t end;
end
$$;

-- SUBSTITUTE: the result's length is known before it is built, so an oversized result is never
-- allocated (64 KB of "a" with each "a" replaced by 64 KB would otherwise ask for 4 GB).
create or replace function panels_substitute(s text, old text, new text) returns text
language plpgsql immutable parallel safe as $$
declare
    hits bigint;
begin
    if s is null then
        return null;
    end if;
    if old = '' then
        return s;
    end if;
    hits := (octet_length(s) - octet_length(replace(s, old, ''))) / octet_length(old);
    if octet_length(s) + hits * (octet_length(new) - octet_length(old)) > 65536 then
        return null;
    end if;
    return replace(s, old, new);
end
$$;

do $$
begin
    execute 'grant execute on function panels_text_cap(text), panels_substitute(text, text, text) to panels_app, panels_auth, panels_worker';
    execute 'revoke all on function panels_text_cap(text), panels_substitute(text, text, text) from public';
end
$$;
