""""Did you mean": the closest known name for a misspelt profile, recipe, pass, space, metric or config key.

A refusal that lists twenty names makes the user find their typo; one that names the likely one fixes it.
difflib's ratio (0.6 cut-off) catches transpositions and dropped letters (`cpuu`, `per_chanel`,
`latency_p95`) without proposing unrelated names; when nothing is close enough the message says nothing extra.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

CUTOFF = 0.6


def close_match(word: object, choices: Iterable[str]) -> str | None:
    """The known name nearest to `word`, or None when none is close (or `word` is not text)."""
    if not isinstance(word, str) or not word or len(word) > 200:
        return None
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=CUTOFF)
    return found[0] if found else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`"did you mean 'cpu'? "` (ready to prefix a fix), or "" when no known name is close."""
    match = close_match(word, choices)
    return f"did you mean {match!r}? " if match else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds directly (X, X | None, list[X], dict[str, X]), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def fields_at(model: type[BaseModel], location: Sequence[str | int]) -> list[str]:
    """The field names of the model found by walking `location` (field names; list indices and dict keys are
    stepped over) from `model`; [] when the walk leaves pydantic models."""
    current: type[BaseModel] | None = model
    for part in location:
        if current is None:
            return []
        if isinstance(part, str) and part in current.model_fields:
            current = _model_in(current.model_fields[part].annotation)
        # an int (list index) or a dict key: the container's model is already `current`
    if current is None:
        return []
    return [name for name, field in current.model_fields.items() if not field.exclude] + \
        [field.alias for field in current.model_fields.values() if field.alias]


def validation_problems(err: ValidationError, model: type[BaseModel] | None = None) -> list[tuple[str, str]]:
    """(where, message) for each problem; an unknown key (`extra_forbidden`) gets "did you mean" when a field of
    the model at that place is close to it."""
    problems = []
    for item in err.errors():
        location = item["loc"]
        where = ".".join(str(part) for part in location)
        message = item["msg"]
        if item.get("type") == "extra_forbidden" and model is not None and location:
            hint = did_you_mean(str(location[-1]), fields_at(model, location[:-1]))
            if hint:
                message = f"{message}; {hint.strip()}"
        problems.append((where, message))
    return problems
