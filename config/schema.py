"""The JSON Schema of route files, generated from the pydantic models, for editors to complete and check them.

The loader stays the judge: the schema cannot express the checks that need the whole file (names that must
refer to an upstream or flag, a flag value that must match its flag's type) or `${NAME}` in a number, and
it asks for methods in capitals where the loader forgives lower case.
"""

from typing import Any

from asgi_gateway.config.routes import RouteFile

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def route_file_schema() -> dict[str, Any]:
    schema = RouteFile.model_json_schema(mode="validation")
    # A flag's key is the mapping key it is written under: a file never has to repeat it.
    definition = schema["$defs"]["FlagDefinition"]
    definition["required"] = [name for name in definition["required"] if name != "key"]
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "Gateway route file"}
