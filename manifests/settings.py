"""Config fields that carry their flag, help text and default: `setting`, and what reads them.

Each command's configuration is one dataclass. A field made with `setting(...)` holds its
default, the help its command-line flag shows and, where the flag differs from the field,
the flag's name and how the flag's text becomes the field's value. `cli.py` builds each
command's options from these fields, `study.config` overrides them by name, and
`check_finite` refuses a NaN or infinite number in any of them before any work. A field
made with plain `dataclasses.field` (or none) is a flag too, named after the field.

Torch-free, and imports nothing of ours but the error type.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

from manifests.errors import UserError

# Help texts several commands share.
SEED_HELP = "Random seed (recorded in outputs)."
REPLACE_HELP = "Replace an existing output."
REPORT_TO_HELP = "Log to tensorboard or wandb (offline) under OUT/logs/, or none."


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    flag: str | tuple[str, ...] | None = None,
    parse: Callable[[Any], Any] | None = None,
    argument: bool = False,
    cli: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with what its command-line option needs.

    Args:
        default, default_factory: as `dataclasses.field`; neither: a required option.
        help: the option's help text.
        flag: the option's names (default `--field-name`); a bool's `--x/--no-x` form works.
        parse: turns the flag's text into the field's value (the flag then takes text),
            e.g. `comma_list` for `--labels A,B`.
        argument: a positional argument instead of an option.
        cli: False for a setting no flag exposes (the library and the study still set it).
    """
    metadata = {"help": help, "flag": flag, "parse": parse, "argument": argument, "cli": cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def comma_list(text: str | None) -> tuple[str, ...] | None:
    """'A, B' -> ('A', 'B'); no text -> None (the field's default)."""
    if not text:
        return None
    return tuple(x.strip() for x in text.split(",") if x.strip())


def flag_names(field: dataclasses.Field) -> tuple[str, ...]:
    """The option names of `field`: its `flag`, else `--` and the name with dashes."""
    flag = field.metadata.get("flag") or f"--{field.name.replace('_', '-')}"
    return (flag,) if isinstance(flag, str) else tuple(flag)


def flag_of(field: dataclasses.Field) -> str:
    """The flag an error names: the first option name (`--x` of `--x/--no-x`)."""
    return flag_names(field)[0].split("/")[0]


def field_default(field: dataclasses.Field) -> Any:
    """The field's default value (a fresh one for a factory); MISSING when it has none."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option of a config class: `name` is its parameter name (a nested
    config's field is `augment__hflip`), `field` the dataclass field, `hint` its type."""

    name: str
    field: dataclasses.Field
    hint: Any

    @property
    def flag(self) -> str:
        return flag_of(self.field)


def options(cls: type, prefix: str = "") -> list[Option]:
    """The options of a config class: every field but those made with `cli=False`.

    A field whose default is a dataclass (TrainConfig.augment) contributes its own fields
    instead, named `<field>__<inner field>` (their flags are the inner fields' own).
    """
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            continue
        default = field_default(field)
        if dataclasses.is_dataclass(default):
            found += options(type(default), prefix=f"{prefix}{field.name}__")
        else:
            found.append(Option(prefix + field.name, field, hints[field.name]))
    return found


def build_config(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """The config `cls` from option values by name (as `options` names them): each value
    parsed as its field says, a list made a tuple where the field is one; fields without
    an option keep their defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            continue
        default = field_default(field)
        if dataclasses.is_dataclass(default):
            kwargs[field.name] = build_config(type(default), values, f"{prefix}{field.name}__")
            continue
        value = values[prefix + field.name]
        if field.metadata.get("parse"):
            value = field.metadata["parse"](value)
        elif isinstance(value, list) and typing.get_origin(hints[field.name]) is tuple:
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def check_finite(values: dict[str, Any], flags: dict[str, str]) -> None:
    """Refuse a NaN or infinite number among `values` (by name), naming its flag."""
    for name, value in values.items():
        numbers = value if isinstance(value, tuple | list) else (value,)
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                raise UserError(f"{flags[name]}: {number}; it must be a finite number")


__all__ = [
    "REPLACE_HELP",
    "REPORT_TO_HELP",
    "SEED_HELP",
    "Option",
    "build_config",
    "check_finite",
    "comma_list",
    "field_default",
    "flag_names",
    "flag_of",
    "options",
    "setting",
]
