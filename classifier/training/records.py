"""Configs and run records as JSON values (`jsonable`), for both trainers' records."""

from __future__ import annotations

from pathlib import Path


def jsonable(value):
    """`value` with paths as strings and tuples as lists, through nested dicts and lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


__all__ = ["jsonable"]
