"""The one convention for a closed set of words that crosses modules: `class Kind(StrEnum)`.

A member is its own string (`Kind.ADD == "add"`; JSON, f-strings and `str()` show the value),
so reports, journals and env.json keep plain words while the code names each one. This is
`enum.StrEnum` (Python 3.11+), with the same behaviour on 3.10.
"""

from __future__ import annotations

import enum

if hasattr(enum, "StrEnum"):
    StrEnum = enum.StrEnum
else:  # Python 3.10

    class StrEnum(str, enum.Enum):  # type: ignore[no-redef]
        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str.__format__(str(self.value), spec)

        __hash__ = str.__hash__  # a member finds its word's entry in a dict, as on 3.11


__all__ = ["StrEnum"]
