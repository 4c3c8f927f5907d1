"""Hop-by-hop fields (RFC 9110 §7.6.1): those that describe one connection, never stored or forwarded.

The fixed set, and the field names a message's `Connection` header adds to it for that message only.
"""

from collections.abc import Iterable

__all__ = ["HOP_BY_HOP", "named_by_connection"]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
_USUAL_CONNECTION = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close"})


def named_by_connection(values: Iterable[bytes], dropped: frozenset[bytes] = HOP_BY_HOP) -> frozenset[bytes]:
    """Lower-case field names the `Connection` header values list, beyond those `dropped` anyway. Usually none:
    `Connection: keep-alive` names a field that is always dropped."""
    values = list(values)
    if len(values) == 1 and values[0] in _USUAL_CONNECTION:
        return frozenset()
    tokens = {token.strip().lower() for value in values for token in value.split(b",")}
    return frozenset(tokens - dropped - {b""})
