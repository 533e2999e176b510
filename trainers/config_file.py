"""Config files (YAML or JSON) read into validated pydantic models; every problem is a ConfigError that
names the file and, per problem, the field by its dotted path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    pass


def load_file(path: Path | str) -> dict:
    """The mapping a YAML or JSON file holds (JSON by the .json suffix, YAML otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot be parsed: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _explain(err: ValidationError) -> str:
    """One line per problem, each naming the field by its dotted path."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def validate(cls: type[BaseModel], data: dict, source: str = "config") -> BaseModel:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid {cls.__name__}:\n{_explain(err)}") from err


def url_or_path(value):
    """A URL kept as text (a Path would fold its '//'), a path as a Path; anything else is left to the
    field's own type check."""
    if "://" in str(value):
        return str(value)
    return Path(value) if isinstance(value, (str, os.PathLike)) else value


def relative_to(base: Path, path: Path | str) -> Path | str:
    """A config's relative path, taken from the config file's folder `base` (a URL, text, as it is)."""
    if isinstance(path, str):
        return path
    return path if path.is_absolute() else base / path
