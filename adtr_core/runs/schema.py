"""Every setting declared once: its type, range or choices, the words of its error, the rules between settings.

A :class:`Setting` wraps a pydantic type (strict where a wrong type must not be coerced: no
``"5"`` for 5, no ``True`` for 1) and says in words what it expects. The fields of
:class:`adtr_core.runs.config.ExperimentConfig` are annotated with their settings, and the
notebooks' own parameters are declared the same way (:mod:`adtr_core.figures.params`), so one
declaration checks a value from every entry point: ``adtr train --set``, a notebook parameter,
a YAML profile, Python, and a ``config.json`` read back. Each failure is one line, the same
line from every entry point:

- ``hidden_dim = 0 is not valid: expected an integer in [1, 8192]``;
- ``unknown model 'vit': choose one of adtr, ...`` for a string that is none of the choices;
- a :class:`Rule` between settings blames one of them in the same form
  (``num_heads = 3 is not valid: expected a divisor of hidden_dim (64)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as _PydanticError


class SettingError(ValueError):
    """A setting of the wrong type, out of range, or at odds with another; the message is one line."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback (papermill reports it too): one line."""
        return [f"{type(self).__name__}: {self}"]


def invalid(name: str, value: Any, expected: str) -> str:
    """The one line of a bad value: the setting, the value given and what is expected."""
    return f"{name} = {value!r} is not valid: expected {expected}"


@dataclass(frozen=True)
class Setting:
    """What one setting accepts.

    Attributes:
        kind: the pydantic type that validates a value (None included when it may be null).
        expected: the expectation in words, for the error line.
        choices: the valid strings of a choice: a string that is none of them is "unknown".
        listed: a list (or mapping): a notebook parameter given as text (papermill's ``-p
            stages "[1, 2]"``) is read as YAML first.
    """

    kind: Any
    expected: str
    choices: tuple[str, ...] = ()
    listed: bool = False

    @cached_property
    def _adapter(self) -> TypeAdapter:
        return TypeAdapter(self.kind)

    def check(self, name: str, value: Any) -> Any:
        """``value`` validated, normalised by pydantic (an int for a number becomes a float,
        a list for a tuple a tuple).

        Raises:
            SettingError: one line naming ``name``, the value and what is expected.
        """
        try:
            return self._adapter.validate_python(value)
        except _PydanticError:
            pass
        if self.choices and isinstance(value, str):
            raise SettingError(f"unknown {name} {value!r}: choose {self.expected}") from None
        raise SettingError(invalid(name, value, self.expected)) from None


# --- building blocks: each says what it expects in the words of the error line ---


def _g(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(ge=None, gt=None, le=None, lt=None) -> str:
    low = "[" if ge is not None else "("
    high = "]" if le is not None else ")"
    lo, hi = (ge if ge is not None else gt), (le if le is not None else lt)
    if lo is not None and hi is not None:
        return f" in {low}{_g(lo)}, {_g(hi)}{high}"
    if lo is not None:
        return f" >= {_g(lo)}" if ge is not None else f" > {_g(lo)}"
    if hi is not None:
        return f" <= {_g(hi)}" if le is not None else f" < {_g(hi)}"
    return ""


def _maybe_null(kind: Any, words: str, null: bool | str) -> tuple[Any, str]:
    if not null:
        return kind, words
    return kind | None, words + (f", or null ({null})" if isinstance(null, str) else ", or null")


def integer(
    ge=None, gt=None, le=None, lt=None, multiple_of=None, null: bool | str = False, words=""
) -> Setting:
    """An integer (not a bool, not a float or a string of one) within the bounds."""
    kind = Annotated[StrictInt, Field(ge=ge, gt=gt, le=le, lt=lt, multiple_of=multiple_of)]
    text = words or (
        (f"an integer multiple of {multiple_of}" if multiple_of else "an integer")
        + _bounds(ge, gt, le, lt)
    )
    return Setting(*_maybe_null(kind, text, null))


def number(ge=None, gt=None, le=None, lt=None, null: bool | str = False, words="") -> Setting:
    """A finite number (an int is one; a bool or a string is not) within the bounds."""
    kind = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=ge, gt=gt, le=le, lt=lt)]
    text = words or ("a number" + _bounds(ge, gt, le, lt))
    return Setting(*_maybe_null(kind, text, null))


def choice(*options: str, null: bool | str = False, words: str = "") -> Setting:
    """One of ``options``."""
    kind, text = _maybe_null(Literal[options], words or f"one of {', '.join(options)}", null)
    return Setting(kind, text, choices=options)


def flag() -> Setting:
    """True or false."""
    return Setting(StrictBool, "true or false")


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("blank")
    return text


def text(null: bool | str = False, words: str = "a string", number_too: bool = False) -> Setting:
    """A non-blank string (``number_too``: an integer too, e.g. a one-class normal class)."""
    kind = Annotated[StrictStr, AfterValidator(_nonblank)]
    if number_too:
        kind = kind | StrictInt
    return Setting(*_maybe_null(kind, words, null))


def _path_like(value: Any) -> Any:
    if not isinstance(value, str | os.PathLike):
        raise ValueError("not a path")
    return value


def path(null: bool | str = False, words: str = "a folder") -> Setting:
    """A path, as a string or a ``pathlib.Path``."""
    return Setting(*_maybe_null(Annotated[Any, AfterValidator(_path_like)], words, null))


def pattern(regex: str, words: str) -> Setting:
    """A string that matches ``regex`` whole."""
    return Setting(Annotated[StrictStr, Field(pattern=f"^(?:{regex})$")], words)


def items(
    item: Setting,
    words: str,
    nonempty: bool = False,
    test: Callable[[tuple], bool] | None = None,
    null: bool | str = False,
) -> Setting:
    """A list of ``item`` values (a tuple in Python), possibly with a ``test`` of the whole."""
    meta: list[Any] = [Field(min_length=1 if nonempty else 0)]
    if test is not None:

        def _whole(values: tuple) -> tuple:
            if not test(values):
                raise ValueError("rejected")
            return values

        meta.append(AfterValidator(_whole))
    kind = Annotated[tuple[item.kind, ...], *meta]
    return Setting(*_maybe_null(kind, words, null), listed=True)


def mapping(words: str) -> Setting:
    """A mapping with string keys."""
    return Setting(Annotated[dict[StrictStr, Any], Field(strict=True)], words, listed=True)


def union(first: Setting, *others: Any, words: str) -> Setting:
    """``first``'s values and ``others`` (types or literal values such as "auto")."""
    kinds = [first.kind] + [o if isinstance(o, type) or o is None else Literal[o] for o in others]
    kind = kinds[0]
    for k in kinds[1:]:
        kind = kind | k
    return Setting(kind, words)


# --- rules between settings ---


@dataclass(frozen=True)
class Rule:
    """A check of settings against each other, made when every one it names is present.

    Attributes:
        names: the settings it reads; the first is the one the error line blames.
        holds: whether the values agree.
        expected: what the blamed setting should be, in words (from the values).
        line: the whole error line instead (from the values), for a rule that blames no one
            setting; ``names`` may then be empty (the rule reads what is there).
    """

    names: tuple[str, ...]
    holds: Callable[[Mapping[str, Any]], bool]
    expected: Callable[[Mapping[str, Any]], str] | None = None
    line: Callable[[Mapping[str, Any]], str] | None = None

    def check(self, values: Mapping[str, Any]) -> None:
        if not all(n in values for n in self.names) or self.holds(values):
            return
        if self.line is not None:
            raise SettingError(self.line(values))
        blamed = self.names[0]
        raise SettingError(invalid(blamed, values[blamed], self.expected(values)))


def budget_rule(epochs: str = "epochs", steps: str = "steps") -> Rule:
    """An epoch count may be null only when a step budget is set (an absent one is not)."""
    return Rule(
        (epochs,),
        lambda v: v[epochs] is not None or v.get(steps) is not None,
        lambda v: f"an integer >= 1 when {steps} is null",
    )


def divisor_rule(name: str, of: str) -> Rule:
    """``name`` divides ``of``."""
    return Rule(
        (name, of),
        lambda v: not isinstance(v[of], int) or v[of] % v[name] == 0,
        lambda v: f"a divisor of {of} ({v[of]})",
    )


@dataclass
class Schema:
    """Settings by name and the rules between them: what :meth:`check` validates.

    ``check`` validates each value present (an unknown name is the caller's to refuse:
    the command line and the notebooks list their own valid names), then every rule whose
    settings are all present, and stops at the first bad one with its line.
    """

    settings: dict[str, Setting]
    rules: list[Rule] = field(default_factory=list)

    def __or__(self, other: Schema) -> Schema:
        twice = sorted(set(self.settings) & set(other.settings))
        if twice:
            raise ValueError(f"setting(s) {', '.join(twice)} declared twice")
        return Schema({**self.settings, **other.settings}, [*self.rules, *other.rules])

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every value validated (and normalised), then the rules.

        Raises:
            SettingError: the first bad value or rule, in one line.
        """
        checked = {
            name: self.settings[name].check(name, value) if name in self.settings else value
            for name, value in values.items()
        }
        for rule in self.rules:
            rule.check(checked)
        return checked
