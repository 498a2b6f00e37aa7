"""Checking the arguments of the public Python API against its annotations.

`api` and `services` promise a result or a `SkillstageError`. Without a check at the door,
`readiness(None, …)` or `history(project, limit="x")` fails deep inside with a TypeError, an
AttributeError or a store error that blames the database. `@checked` reads a function's
annotations once, on its first call, and then checks each call's arguments in a microsecond or
two: a `str` is taken for a `Path` (and for each item of a sequence of paths), an `int` for a
`float` (any `numbers.Integral` or `Real`: numpy's too), 0 or 1 for a `bool`; a datetime must
carry its time zone; anything else that does not match is a
`UsageError` naming the function, the argument and what it must be.

Only the shapes the API uses are understood (classes, `X | None`, `Literal`, sequences and lists);
an annotation beyond them (a callable, a mapping) is not checked. pydantic's `validate_call` would
do all this, and cost every command ~140 ms to import and build.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from skillstage.errors import UsageError, as_usage_error

F = TypeVar("F", bound=Callable[..., Any])

# A check of one value: the value to use (a Path for a str) or raises _Mismatch.
_Check = Callable[[Any], Any]


class _Mismatch(Exception):
    """The value does not match; its argument, if any, says how (else: "must be …")."""


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (list, Sequence, Iterable):
        (item,) = typing.get_args(annotation) or (Any,)
        return "a list of paths (str or Path)" if item is Path else f"a list of {_describe(item)}"
    if annotation is type(None):
        return "None"
    if annotation is Path:
        return "a path (str or Path)"
    if annotation is dt.datetime:
        return "a datetime with a time zone"
    return getattr(annotation, "__name__", str(annotation))


def _checker(annotation: Any) -> _Check | None:
    """The check of a value against `annotation`, or None when it is not checked."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [_checker(a) for a in typing.get_args(annotation)]
        if any(m is None for m in members):
            return None
        checks = cast(list[_Check], members)

        def any_of(value: Any) -> Any:
            why = None
            for check in checks:
                try:
                    return check(value)
                except _Mismatch as exc:
                    why = why or exc
            raise why or _Mismatch()

        return any_of
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)

        def one_of(value: Any) -> Any:
            if value not in allowed:
                raise _Mismatch
            return value

        return one_of
    if origin in (list, Sequence, Iterable):
        (item,) = typing.get_args(annotation) or (Any,)
        each = _checker(item) or (lambda value: value)

        def items(value: Any) -> Any:
            # A str is a sequence, of letters: promote(project, "spam-filter") is not 11 skills.
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise _Mismatch
            return [each(v) for v in value]

        return items
    if origin is not None and isinstance(origin, type) and not typing.get_args(annotation)[1:]:
        annotation = origin  # os.PathLike[str]: a PathLike
    if annotation is Any or not isinstance(annotation, type):
        return None
    if annotation is type(None):

        def none(value: Any) -> Any:
            if value is not None:
                raise _Mismatch
            return value

        return none
    if annotation is Path:

        def path(value: Any) -> Any:
            if isinstance(value, Path):
                return value
            if isinstance(value, str) and not value:
                raise _Mismatch
            if isinstance(value, str | os.PathLike):
                try:
                    return Path(os.fspath(value))
                except TypeError:  # a PathLike of bytes
                    raise _Mismatch from None
            raise _Mismatch

        return path
    if annotation is str:

        def text(value: Any) -> Any:
            if not isinstance(value, str):
                raise _Mismatch
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes that were not UTF-8, kept as lone surrogates
                raise _Mismatch("is not valid UTF-8") from None
            return value

        return text
    if annotation is dt.datetime:

        def aware(value: Any) -> Any:
            if not isinstance(value, dt.datetime) or value.utcoffset() is None:
                raise _Mismatch
            return value

        return aware
    if annotation is float:

        def number(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise _Mismatch
            try:
                return float(value)
            except OverflowError:  # 10**400
                raise _Mismatch from None

        return number
    if annotation is int:

        def integer(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise _Mismatch
            return int(value)

        return integer
    if annotation is bool:

        def flag(value: Any) -> Any:
            if isinstance(value, bool):
                return value
            # 0 or 1, numpy's bools too (neither bool nor Integral)
            numeric = type(value).__name__ == "bool_" or isinstance(value, numbers.Integral)
            if numeric and value in (0, 1):
                return bool(value)
            raise _Mismatch

        return flag

    def instance(value: Any) -> Any:
        if not isinstance(value, annotation):
            raise _Mismatch
        return value

    return instance


def _checks(function: Callable[..., Any]) -> dict[str, tuple[_Check, str]]:
    """Each checked parameter's check and description (annotations that cannot be resolved, such
    as names imported only for type checkers, are not checked)."""
    module = inspect.getmodule(function)
    namespace = dict(vars(module)) if module else {}
    found: dict[str, tuple[_Check, str]] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.annotation is inspect.Parameter.empty or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except Exception:
                continue
        check = _checker(annotation)
        if check is not None:
            found[name] = (check, _describe(annotation))
    return found


def checked(function: F) -> F:
    """`function` with its arguments checked against its annotations (see the module)."""
    signature = inspect.signature(function)
    checks: dict[str, tuple[_Check, str]] | None = None

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal checks
        if checks is None:
            checks = _checks(function)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"{function.__qualname__}(): {exc}") from None
        for name, value in bound.arguments.items():
            found = checks.get(name)
            if found is None:
                continue
            check, expected = found
            try:
                bound.arguments[name] = check(value)
            except _Mismatch as mismatch:
                shown = repr(value)
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                how = (
                    f"{mismatch.args[0]}: {shown}"
                    if mismatch.args
                    else f"must be {expected}, not {type(value).__name__} {shown}"
                )
                raise UsageError(f"{function.__qualname__}(): {name} {how}") from None
        try:
            return function(*bound.args, **bound.kwargs)
        except OSError as exc:
            usage = as_usage_error(exc)
            if usage is None:
                raise
            raise usage from None

    return cast(F, call)
