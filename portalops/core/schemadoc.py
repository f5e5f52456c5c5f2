"""A configuration file's reference, made from its models' JSON Schema so it cannot drift.

:func:`json_schema` is a model's schema as ``ops config schema`` publishes it; :func:`keys`
walks it into every key a file may write (type, default, description); :func:`markdown`
renders those as one table per top-level key; :func:`written_paths` lists the keys a YAML
document does write, so a test can hold an example file to the schema.

Key paths are dotted: ``backup.retention.daily``; a list's items are ``[]``
(``backup.repositories[].url``); a mapping's free keys are ``<name>``
(``oncall.rotations.<name>.people``); the items of a list whose models are told apart by a
field (a discriminated union) carry it: ``backup.sources[kind=files].paths``.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

Schema = Mapping[str, Any]


class _NoFieldTitles(GenerateJsonSchema):
    """pydantic titles every field after its name ("Writer Key"): noise to an editor, and a
    title left on a value is then the name of its type (``duration``)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        """Each property without a description gets its field's docstring: what pydantic's
        ``use_attribute_docstrings`` would have given it, read here rather than whenever a
        model is defined."""
        json_schema = super().model_schema(schema)
        model: type[BaseModel] = schema["cls"]
        properties = json_schema.get("properties", {})
        for name, field in model.model_fields.items():
            node = properties.get(field.alias or name)
            if field.description is not None or not isinstance(node, dict):
                continue
            doc = field_docstring(model, name)
            if doc is not None and "description" not in node:
                node["description"] = doc
        return json_schema


def field_docstring(model: type, name: str) -> str | None:
    """The docstring of field ``name``: the string literal under its annotation in the body
    of the nearest class (``model`` or a base) that annotates it."""
    for cls in model.__mro__:
        if name in vars(cls).get("__annotations__", {}):
            return _attribute_docstrings(cls).get(name)
    return None


@cache
def _attribute_docstrings(cls: type) -> dict[str, str]:
    """Every ``name: type`` in ``cls``'s body followed by a string literal, cleaned as
    pydantic cleans them (:func:`inspect.cleandoc`)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source: built in, or made at run time
        return {}
    tree = ast.parse(source)
    body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
    found = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[node.target.id] = inspect.cleandoc(after.value.value)
    return found


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of what ``model`` accepts from a file."""
    schema = model.model_json_schema(mode="validation", schema_generator=_NoFieldTitles)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


@dataclass(frozen=True)
class Key:
    """One key a file may write."""

    path: str  # backup.sources[kind=files].paths
    section: str  # the table it is listed in: a top-level key or a list item's variant
    type: str
    default: str  # "required", "unset", or the default in JSON
    description: str


def keys(schema: Schema) -> list[Key]:
    """Every key of the schema's document, depth first in declaration order."""
    return list(_keys(schema, _resolve(schema, schema), "", None))


def _keys(root: Schema, model: Schema, prefix: str, section: str | None) -> Iterator[Key]:
    required = set(model.get("required", ()))
    for name, declared in model.get("properties", {}).items():
        node = _resolve(root, declared)
        path = f"{prefix}.{name}" if prefix else name
        where = section or path
        if name in required:
            default = "required"
        else:
            default = _default_text(node.get("default"), _is_model(_value(root, node)))
        yield Key(path, where, _type_text(root, node), default, _text(node.get("description")))
        yield from _inner(root, node, path, where)


def _inner(root: Schema, node: Schema, path: str, section: str) -> Iterator[Key]:
    """The keys under ``node`` (a model, a list of models, a mapping of models)."""
    value = _value(root, node)
    if _is_model(value):
        yield from _keys(root, value, path, section)
    elif value.get("type") == "array" and "items" in value:
        items = _resolve(root, value["items"])
        variants = _variants(root, items)
        if variants:
            for tag, variant in variants:
                inner = f"{path}[{tag}]"
                yield from _keys(root, variant, inner, inner)
        else:
            yield from _inner(root, items, f"{path}[]", section)
    elif isinstance(value.get("additionalProperties"), dict):
        yield from _inner(root, _resolve(root, value["additionalProperties"]), f"{path}.<name>",
                          section)  # fmt: skip


def written_paths(schema: Schema, data: Any) -> set[str]:
    """The key paths (as :func:`keys` spells them) that ``data``, a loaded YAML document,
    writes. Keys the schema does not know are left out: validation reports those."""
    found: set[str] = set()
    _written(schema, _resolve(schema, schema), data, "", found)
    return found


def _written(root: Schema, node: Schema, data: Any, path: str, found: set[str]) -> None:
    value = _value(root, node)
    if _is_model(value) and isinstance(data, dict):
        for name, declared in value.get("properties", {}).items():
            if name in data:
                inner = f"{path}.{name}" if path else name
                found.add(inner)
                _written(root, _resolve(root, declared), data[name], inner, found)
    elif value.get("type") == "array" and "items" in value and isinstance(data, list):
        items = _resolve(root, value["items"])
        variants = dict(_variants(root, items))
        field = items.get("discriminator", {}).get("propertyName")
        for item in data:
            if not variants:
                _written(root, items, item, f"{path}[]", found)
            elif isinstance(item, dict) and f"{field}={item.get(field)}" in variants:
                tag = f"{field}={item.get(field)}"
                _written(root, variants[tag], item, f"{path}[{tag}]", found)
    elif isinstance(value.get("additionalProperties"), dict) and isinstance(data, dict):
        inner = _resolve(root, value["additionalProperties"])
        for item in data.values():
            _written(root, inner, item, f"{path}.<name>", found)


def markdown(schema: Schema, title: str, intro: str, regenerate: str) -> str:
    """The reference: ``title``, ``intro``, then per top-level key its description and a
    table of its keys, then one table per variant of a discriminated list."""
    root = _resolve(schema, schema)
    found = keys(schema)
    sections: dict[str, list[Key]] = {}
    for key in found:
        sections.setdefault(key.section, []).append(key)
    lines = [
        f"# {title}",
        "",
        f"<!-- Generated from the config models; do not edit. Regenerate: {regenerate} -->",
        "",
        intro.strip(),
        "",
    ]
    lines += [f"- [`{name}`](#{_anchor(name)})" for name in root.get("properties", {})]
    for name, section in sections.items():
        rows = section
        if "[" in name:  # a variant: its model's docstring says what it is
            heading, about = f"### {_variant_heading(name)}", _variant_text(schema, name)
        elif section[0].default == "(below)":  # a top-level mapping: its row said "(below)"
            heading, about, rows = f"## `{name}`", section[0].description, section[1:]
        else:  # a top-level value: its row says it all
            heading, about = f"## `{name}`", ""
        lines += ["", heading, ""]
        if about:
            lines += [about, ""]
        if not rows:
            continue
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [
            f"| `{k.path}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.description)} |"
            for k in rows
        ]
    return "\n".join(lines) + "\n"


def _variant_text(schema: Schema, section: str) -> str:
    """The docstring of the model a variant section is about."""
    node = _lookup(schema, section)
    return _text(node.get("description")) if node is not None else ""


def _lookup(schema: Schema, section: str) -> Schema | None:
    """The model a variant section (``backup.sources[kind=files]``) is about."""
    head, _, tag = section.rpartition("[")
    parent = _path_node(schema, head)
    if parent is None:
        return None
    items = _resolve(schema, _value(schema, parent).get("items", {}))
    return dict(_variants(schema, items)).get(tag.rstrip("]"))


def _path_node(schema: Schema, dotted: str) -> Schema | None:
    node: Schema = _resolve(schema, schema)
    for part in dotted.split("."):
        value = _value(schema, node)
        declared = value.get("properties", {}).get(part)
        if declared is None:
            return None
        node = _resolve(schema, declared)
    return node


def _variant_heading(section: str) -> str:
    head, _, tag = section.rpartition("[")
    field, _, value = tag.rstrip("]").partition("=")
    return f"`{head}` with `{field}: {value}`"


def _anchor(name: str) -> str:
    """GitHub's anchor of a ``## `name` `` heading."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _text(description: object) -> str:
    """A docstring as one Markdown line: reST's ``code`` becomes `code`."""
    if not isinstance(description, str):
        return ""
    return " ".join(description.split()).replace("``", "`")


def _resolve(root: Schema, node: Schema) -> Schema:
    """Follow ``$ref`` to ``$defs``; keys beside the ref (a field's description, default)
    win over the target's."""
    seen = 0
    while "$ref" in node and seen < 32:  # bounded: a self-referencing schema is a bug
        name = str(node["$ref"]).rpartition("/")[2]
        target = root.get("$defs", {}).get(name, {})
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node


def _value(root: Schema, node: Schema) -> Schema:
    """``node`` without its ``null`` alternative (an optional key), resolved."""
    options = [o for o in node.get("anyOf", ()) if o.get("type") != "null"]
    if len(options) == 1 and len(node.get("anyOf", ())) == 2:
        return _resolve(root, options[0])
    return node


def _is_model(node: Schema) -> bool:
    return node.get("type") == "object" and "properties" in node


def _variants(root: Schema, items: Schema) -> list[tuple[str, Schema]]:
    """A discriminated union's models, as (``field=value``, model)."""
    discriminator = items.get("discriminator")
    if not isinstance(discriminator, dict):
        return []
    field = discriminator["propertyName"]
    return [
        (f"{field}={value}", _resolve(root, {"$ref": ref}))
        for value, ref in discriminator.get("mapping", {}).items()
    ]


def _type_text(root: Schema, node: Schema) -> str:
    """What a reader needs to write the value: ``list of paths``, ``integer ≥ 1, ≤ 20``."""
    node = _resolve(root, node)
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "title" in node and not _is_model(node):
        return str(node["title"])  # a named type: duration
    if "anyOf" in node or "oneOf" in node:
        return _union_text(root, node)
    kind = str(node.get("type", "any"))
    if kind in ("array", "object"):
        return _collection_text(root, node)
    if kind in ("integer", "number"):
        return kind + _bounds(node)
    if kind == "string":
        return _string_text(node)
    return "true or false" if kind == "boolean" else kind


def _union_text(root: Schema, node: Schema) -> str:
    variants = _variants(root, node)
    if variants:
        field = node["discriminator"]["propertyName"]
        kinds = ", ".join(f"`{tag.partition('=')[2]}`" for tag, _ in variants)
        return f"mapping by `{field}` ({kinds})"
    options = [o for o in node.get("anyOf", node.get("oneOf", ())) if o.get("type") != "null"]
    return " or ".join(_type_text(root, o) for o in options)


def _collection_text(root: Schema, node: Schema) -> str:
    if node.get("type") == "array":
        text = "list of " + _plural(_type_text(root, node.get("items", {})))
        if node.get("minItems"):
            text += f" (at least {node['minItems']})"
        return text
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return f"mapping of names to {_plural(_type_text(root, extra))}"
    return "mapping"


def _plural(text: str) -> str:
    for singular, plural in (
        ("mapping", "mappings"),
        ("path", "paths"),
        ("integer", "integers"),
        ("duration", "durations"),
    ):
        if text == singular or text.startswith(singular + " "):
            return plural + text[len(singular) :]
    return text


def _bounds(node: Schema) -> str:
    parts = [
        f"{sign} {_number(node[key])}"
        for key, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in node
    ]
    return " " + ", ".join(parts) if parts else ""


def _string_text(node: Schema) -> str:
    named = {"path": "path", "date-time": "date and time", "time": "time of day", "date": "date"}
    text = named.get(str(node.get("format")), "text")
    if "pattern" in node:
        text += f" matching `{node['pattern']}`"
    low, high = node.get("minLength"), node.get("maxLength")
    if low and high:
        text += f", {low} to {high} characters"
    elif low:
        text += " (not empty)" if low == 1 else f", at least {low} characters"
    return text


def _default_text(value: Any, is_model: bool) -> str:
    if value is None:
        return "unset"
    if is_model and isinstance(value, dict):
        return "(below)"  # its keys' rows give each default
    return f"`{json.dumps(_tidy(value), ensure_ascii=False)}`"


def _tidy(value: Any) -> Any:
    """14400.0 -> 14400: a default reads as it would be written."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    return value


def _number(value: Any) -> str:
    return str(_tidy(value))
