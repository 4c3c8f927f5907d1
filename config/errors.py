"""Configuration errors as values that know where they come from, so start-up can print them all at once."""

from dataclasses import dataclass

from pydantic_core import ErrorDetails


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one place: `routes.yaml:14: routes[2].upstream: unknown upstream 'userz'`."""

    source: str  # a file path, or "environment" for settings
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(ValueError):
    """Every issue found in a file (or the environment), not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues


def error_message(error: ErrorDetails) -> str:
    """Pydantic's message, worded for someone editing a file rather than calling a constructor."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return error["msg"].removeprefix("Value error, ")
