"""Route files: YAML in, a validated RouteFile out, or a ConfigError naming file, line and field of every issue.

The YAML is composed once into a node tree; each pydantic error's `loc` is walked down that tree to the
line it came from. `${NAME}` and `${NAME:-default}` in string values are read from the environment.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from asgi_gateway.config.base import Loc
from asgi_gateway.config.errors import ConfigError, ConfigIssue, error_message
from asgi_gateway.config.routes import RouteFile, cross_reference_issues

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_route_file(path: Path, environ: Mapping[str, str] | None = None) -> RouteFile:
    """Read and validate one route file; raises ConfigError with every issue found."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"cannot read: {exc}")]) from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            issues = _check_tree(root, source, os.environ if environ is None else environ)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError([ConfigIssue(source, line, "", f"invalid YAML: {exc.problem}")]) from None
    if root is None or not isinstance(data, dict):
        raise ConfigError([*issues, ConfigIssue(source, 1, "", "must be a mapping with 'upstreams' and 'routes'")])
    try:
        routes = RouteFile.model_validate(data, context={"base_dir": path.parent})  # files it names are beside it
    except ValidationError as exc:
        issues += [
            ConfigIssue(source, line_of(root, error["loc"]), field_path(error["loc"]), error_message(error))
            for error in exc.errors()
        ]
    else:
        issues += [
            ConfigIssue(source, line_of(root, loc), field_path(loc), message)
            for loc, message in cross_reference_issues(routes)
        ]
    if issues:
        raise ConfigError(sorted(issues, key=lambda issue: issue.line or 0))
    return routes


def _check_tree(node: yaml.Node | None, source: str, environ: Mapping[str, str]) -> list[ConfigIssue]:
    """Substitute environment references in place and report duplicate keys, which YAML would silently merge."""
    issues: list[ConfigIssue] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        line = current.start_mark.line + 1
        if isinstance(current, yaml.ScalarNode) and current.tag == "tag:yaml.org,2002:str" and "${" in current.value:
            current.value, missing = _expand(current.value, environ)
            issues.extend(ConfigIssue(source, line, "", f"environment variable {name} is not set") for name in missing)
        elif isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                if key.value in seen:
                    issues.append(ConfigIssue(source, key.start_mark.line + 1, "", f"duplicate key '{key.value}'"))
                seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return issues


def _expand(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is None:
            missing.append(name)
            return match.group(0)
        return default

    return _ENV_REFERENCE.sub(replace, value), missing


def line_of(root: yaml.Node, loc: Loc) -> int:
    """The line of the deepest key or item `loc` reaches; a missing field reports its parent."""
    node, line = root, root.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((key, value) for key, value in node.value if key.value == str(part)), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


def field_path(loc: Loc) -> str:
    """('routes', 2, 'cache', 'ttl') -> 'routes[2].cache.ttl'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path
