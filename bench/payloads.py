"""The documents every contender serves: the origin's files and the in-memory references' bodies are the same bytes."""

import json

SIZES = {"/1k": 1024, "/64k": 64 * 1024}


def json_document(size: int) -> bytes:
    """A JSON object holding user-like records, padded to exactly `size` bytes."""
    records: list[bytes] = []
    while True:
        index = len(records)
        record = json.dumps(
            {"id": index, "name": f"user-{index}", "email": f"user-{index}@example.com", "active": index % 3 != 0},
            separators=(",", ":"),
        ).encode()
        if len(_assemble([*records, record], b"")) > size:
            break
        records.append(record)
    base = _assemble(records, b"")
    if len(base) > size:
        raise ValueError(f"{size} bytes cannot hold an empty document")
    return _assemble(records, b"x" * (size - len(base)))


def _assemble(records: list[bytes], pad: bytes) -> bytes:
    return b'{"items":[' + b",".join(records) + b'],"pad":"' + pad + b'"}'


def documents() -> dict[str, bytes]:
    """URL path -> body."""
    return {path: json_document(size) for path, size in SIZES.items()}
