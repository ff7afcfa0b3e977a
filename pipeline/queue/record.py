"""How a job's fields are laid out in its Redis hash so a queued job stays small.

Redis keeps a small hash as one compact listpack, but converts it for good to a hashtable
(about three times the memory) once any value is longer than `hash-max-listpack-value`
(64 bytes by default; redis.conf, "Advanced config") or it has more than
`hash-max-listpack-entries` (128) fields. A queued document job measured 1,552 B as a
hashtable and 496 B with the same fields as a listpack (README, "The product's job,
measured"): two of its values were the long ones, the task's arguments and the idempotency
key. We never reconfigure the user's Redis, so the record keeps every value it writes at
enqueue within the default:

- a JSON value longer than 64 B (`args`, `kwargs`) is stored in 64-byte pieces, `args`,
  `args.1`, `args.2`, ... and joined when read (`spread`, `joined`). The JSON is
  ASCII (json.dumps escapes everything else), so a byte cut never splits a character.
  A value too long to stay a listpack in any case (more than `MAX_PIECES` pieces) is
  stored whole: pieces would only add fields to a hashtable.
- the idempotency key is kept as a fixed-length digest (`idempotency_digest`), in the job and
  in the name of the key that dedupes it; deduplication only compares keys, so the digest
  decides exactly what the key did (up to a 128-bit collision).

Fields written later (result, error, traceback, progress) may still convert a running or
finished job's hash; the queued ones are the many that wait.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

# Redis's default hash-max-listpack-value (bytes): a longer value converts the hash.
LISTPACK_VALUE_BYTES = 64
# Beyond this many pieces (1 KB of JSON) the pieces cost more than one long value.
MAX_PIECES = 16
# The fields that may be stored in pieces.
SPREAD_FIELDS = ("args", "kwargs")


def spread(name: str, value: str) -> dict[str, str]:
    """`{name: value}`, or `value` cut in LISTPACK_VALUE_BYTES pieces: {name: first,
    f"{name}.1": second, ...}. `value` must be ASCII (our JSON is); raises ValueError if not."""
    if not value.isascii():
        raise ValueError(f"{name}: only ASCII JSON is stored in pieces")
    size = LISTPACK_VALUE_BYTES
    count = -(-len(value) // size)
    if count <= 1 or count > MAX_PIECES:
        return {name: value}
    out = {name: value[:size]}
    for i in range(1, count):
        out[f"{name}.{i}"] = value[i * size : (i + 1) * size]
    return out


def joined(h: Mapping[str, str], name: str) -> str | None:
    """The value `spread` stored under `name` in the hash `h` (HGETALL's reply), whole again;
    None when the field is absent."""
    first = h.get(name)
    if first is None:
        return None
    pieces = [first]
    i = 1
    while (piece := h.get(f"{name}.{i}")) is not None:
        pieces.append(piece)
        i += 1
    return "".join(pieces)


def idempotency_digest(key: str) -> str:
    """The 32-hex-digit digest (the first 128 bits of SHA-256 of the UTF-8 key) that stands
    for an idempotency key in the job record and in Keys.idempotency: the same key gives the
    same digest in every process and version."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]
