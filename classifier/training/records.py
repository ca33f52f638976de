"""Configs and run records as JSON values (`jsonable`), for both trainers' records."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path


def jsonable(value):
    """`value` with paths as strings, tuples as lists and dataclasses as dicts, through
    nested dicts and lists (what JSON and TOML write)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


__all__ = ["jsonable"]
