"""Parse YAML data into typed models, turning pydantic's errors into FILE:LINE: key: message."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict

from portalops.core.errors import SourceError
from portalops.core.yamlsrc import Loc, YamlSource, dotted

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every model read from a user's file: unknown keys are errors (usually typos).
    A field's docstring (the string literal under it) is its description in the JSON Schema
    (``ops config schema``), so the reference is written once, beside the field.

    The docstrings are read from the source only when a schema is made
    (:func:`portalops.core.schemadoc.json_schema`), not by pydantic as each model is defined
    (``use_attribute_docstrings``): that parses every model's source, a fifth of the start-up
    of a command that reads ops.yaml.

    Each model's validator is built the first time it is used (``defer_build``), not as its
    class is defined: a command validates one section of ops.yaml, or one file, and the
    models it never validates cost it only their definition (the validator of the model it
    does validate includes those of the models nested in it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _zone_name(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Asia/Ho_Chi_Minh"
        ) from None
    return name


ZoneName = Annotated[str, AfterValidator(_zone_name)]
"""An IANA time zone name (``Asia/Ho_Chi_Minh``), checked at load."""


class LocatedError(ValueError):
    """Raised by a model validator that checks across keys, to point at the key at fault:
    ``loc`` is relative to the model that raised it (``("drill", "smoke", 0, "source")``)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def parse_model(model: type[M], source: YamlSource) -> M:
    """Validate ``source.data`` as ``model``; every problem is reported at once, with its line."""
    data = {} if source.data is None else source.data
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [_render(err, model, source) for err in exc.errors(include_url=False)]
        raise SourceError(problems) from None


# pydantic error type -> what a sysadmin reads; {got} is the offending value.
_MESSAGES = {
    "missing": "required key is missing",
    "int_parsing": "expected a whole number, got {got}",
    "int_type": "expected a whole number, got {got}",
    "int_from_float": "expected a whole number, got {got}",
    "float_parsing": "expected a number, got {got}",
    "float_type": "expected a number, got {got}",
    "bool_parsing": "expected true or false, got {got}",
    "bool_type": "expected true or false, got {got}",
    "string_type": "expected text, got {got}",
    "list_type": "expected a list, got {got}",
    "tuple_type": "expected a list, got {got}",
    "dict_type": "expected a mapping of keys, got {got}",
    "model_type": "expected a mapping of keys, got {got}",
    "model_attributes_type": "expected a mapping of keys, got {got}",
}


def _render(err: Any, model: type[BaseModel], source: YamlSource) -> str:
    kind = err["type"]
    ctx = err.get("ctx", {})
    raised = ctx.get("error")
    extra = raised.loc if isinstance(raised, LocatedError) else ()
    loc = _clean_loc((*err["loc"], *extra), source)
    got = _show(err.get("input"))
    if kind in _MESSAGES:
        message = _MESSAGES[kind].format(got=got)
    elif kind == "extra_forbidden":
        message = "unknown key" + _did_you_mean(model, loc)
    elif kind in {"literal_error", "enum"}:
        message = f"expected {ctx['expected']}, got {got}"
    elif kind == "union_tag_invalid":
        loc = (*loc, str(ctx["discriminator"]).strip("'"))
        message = f"expected {ctx['expected_tags']}, got {_show(ctx['tag'])}"
    elif kind == "union_tag_not_found":
        message = f"required key '{ctx['discriminator'].strip(chr(39))}' is missing"
    elif kind == "value_error":
        message = str(ctx["error"])
    else:  # bounds, lengths, patterns: pydantic's own words are clear enough
        message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got}"
    return f"{source.where(loc)}: {dotted(loc)}: {message}"


def _did_you_mean(model: type[BaseModel], loc: Loc) -> str:
    allowed = _fields_at(model, loc[:-1])
    if not allowed or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"


def _clean_loc(loc: tuple[Any, ...], source: YamlSource) -> Loc:
    """Drop parts pydantic adds that are not keys in the file: a discriminated union's tag
    (``sources[0].files.paths``: 'files' is the value of ``kind``, not a key) and validator
    names (``function-after[...]``)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        candidate = (*out, part)
        if isinstance(part, int) or candidate in source.lines:
            out.append(part)
            continue
        if _is_internal(part):
            continue
        following = loc[i + 1] if i + 1 < len(loc) else None
        if following is not None and (*out, following) in source.lines:
            continue  # a union tag: the next part sits directly under our parent
        out.append(part)
    return tuple(out)


def _is_internal(part: str) -> bool:
    # Discriminated unions put the tag in the location; validators put "function-after[...]".
    return "[" in part or part.startswith(("function-", "tagged-union"))


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model allows at ``loc`` (for 'did you mean' hints)."""
    current: Any = model
    for part in loc:
        current = _inner_model(current, part)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or name for name, f in current.model_fields.items())
    return []


def _inner_model(tp: Any, part: str | int) -> Any:
    for candidate in _unwrap(tp):
        if isinstance(part, int):
            origin = typing.get_origin(candidate)
            if origin in (list, tuple):
                return typing.get_args(candidate)[0]
        elif isinstance(candidate, type) and issubclass(candidate, BaseModel):
            field = candidate.model_fields.get(part)
            if field is not None:
                return field.annotation
        elif typing.get_origin(candidate) is dict:
            return typing.get_args(candidate)[1]
    return None


def _unwrap(tp: Any) -> list[Any]:
    """Flatten Optional/Union/Annotated into the candidate types."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_unwrap(arg))
        return out
    return [tp]
