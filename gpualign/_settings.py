"""Settings defined once: frozen dataclasses whose fields carry their own rules.

Each stage's settings (:class:`gpualign.detect.DetectSettings`,
:class:`gpualign.match.MatchSettings`, :class:`gpualign.fit.FitSettings`) is a frozen
dataclass of :func:`setting` fields: name, default, help text and the rule a value
must satisfy live in one place. Construction validates every field (an
:class:`~gpualign.InputError` naming the field and the rule); the API's keyword
arguments and the CLI's options are built from the same fields, and a test fails
when either drifts from them.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

from gpualign._errors import InputError

__all__ = ["setting", "Settings", "split_settings"]


def setting(default: Any, help: str, *, kind: type = float, minimum: float | None = None,
            above: bool = False, maximum: float | None = None, optional: bool = False,
            choices: tuple[str, ...] | None = None, rule: str = "",
            cli: str | None = None) -> Any:
    """A dataclass field with its validation rule and help text.

    Parameters
    ----------
    default : object
        Default value.
    help : str
        One line for ``--help`` and the docs.
    kind : type
        ``float``, ``int``, ``bool`` or ``str``.
    minimum, maximum : float, optional
        Bounds (inclusive; ``minimum`` exclusive with ``above``).
    optional : bool
        None is allowed (and means "choose automatically").
    choices : tuple of str, optional
        Allowed values of a string (case-insensitive).
    rule : str
        Extra words for the error message (e.g. "(a quad has 4 stars)").
    cli : str, optional
        Name of the CLI option when it differs from ``--field-name``.
    """
    meta = dict(help=help, kind=kind, minimum=minimum, above=above, maximum=maximum,
                optional=optional, choices=choices, rule=rule, cli=cli)
    return dataclasses.field(default=default, metadata=meta)


def _check(name: str, value: Any, m: Mapping[str, Any]) -> Any:
    """Validate one value against its field's rule; return it normalised."""
    if value is None and m["optional"]:
        return None
    kind = m["kind"]
    extra = f" {m['rule']}" if m["rule"] else ""
    if m["choices"] is not None:
        if not isinstance(value, str) or value.lower() not in m["choices"]:
            raise InputError(f"{name} must be one of {', '.join(m['choices'])}, got {value!r}",
                             hint=m["help"])
        return value.lower()
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {value!r}", hint=m["help"])
        return value
    if kind is bool:
        if not isinstance(value, (bool, int)):
            raise InputError(f"{name} must be true or false, got {value!r}", hint=m["help"])
        return bool(value)
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok_type = integral if kind is int else (isinstance(value, numbers.Real)
                                            and not isinstance(value, bool))
    if not ok_type:
        what = "an integer" if kind is int else "a number"
        raise InputError(f"{name} must be {what}{extra}, got {value!r}", hint=m["help"])
    lo, hi = m["minimum"], m["maximum"]
    if lo is not None and hi is not None:
        if not lo <= value <= hi:
            raise InputError(f"{name} must be {lo}-{hi}{' or None' if m['optional'] else ''}"
                             f"{extra}, got {value!r}", hint=m["help"])
    elif lo is not None:
        if m["above"] and not value > lo:
            raise InputError(f"{name} must be > {lo:g}{extra}, got {value!r}", hint=m["help"])
        if not m["above"] and not value >= lo:
            raise InputError(f"{name} must be >= {lo:g}{extra}, got {value!r}", hint=m["help"])
    return value


class Settings:
    """Base of the frozen settings dataclasses: validation on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _check(f.name, getattr(self, f.name), f.metadata)
            object.__setattr__(self, f.name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        """The values by name."""
        return {n: getattr(self, n) for n in self.names()}


def split_settings(kwargs: Mapping[str, Any], *classes: type) -> tuple[list[Any], dict[str, Any]]:
    """Build one instance of each settings class from ``kwargs``; return the rest.

    A value that is already an instance of a class (passed under its lower-case
    class name, e.g. ``match=MatchSettings(...)``) is used as it is.
    """
    rest = dict(kwargs)
    out = []
    for cls in classes:
        given = {n: rest.pop(n) for n in cls.names() if n in rest}
        out.append(cls(**given))
    return out, rest
