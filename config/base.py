"""What every route-file model shares: unknown keys are errors, a loaded file never changes, and the few value
types and rules that several sections use."""

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Loc = tuple[int | str, ...]
Seconds = Annotated[float, Field(gt=0)]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FIELD_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token: a field name, also a cookie name


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_field_name(name: str) -> str:
    if not FIELD_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name
