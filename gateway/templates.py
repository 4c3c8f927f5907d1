"""URL templates (`/users/{id}`, `/orders?user={user.id}`), split once at start-up into literals and fields."""

# RFC 3986 pchar: left as is when a value is put into a path segment.
PCHAR_SAFE = "!$&'()*+,;=:@-._~"

Template = tuple[tuple[str, str | None], ...]  # (literal, the field after it or None)


def split_template(template: str) -> Template:
    parts: list[tuple[str, str | None]] = []
    rest = template
    while "{" in rest:
        literal, _, tail = rest.partition("{")
        field, _, rest = tail.partition("}")
        parts.append((literal, field))
    parts.append((rest, None))
    return tuple(parts)
