"""``ops config``: validate the operations config and show the effective settings; print its
JSON Schema or the reference generated from it (docs/configuration.md)."""

from __future__ import annotations

import argparse
import json

from rich.text import Text

from portalops.cli.context import Context
from portalops.cli.output import Outcome
from portalops.settings import REGENERATE, settings_reference, settings_schema


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "config",
        help="the operations config (ops.yaml): check it, print its schema or reference",
        description="Check the operations config, or print its schema and reference.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser(
        "check",
        help="validate the config; print the effective settings",
        description="Validate the config (every problem with file, line and key) and print "
        "the main effective settings; --json prints them all.",
    )
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of ops.yaml, or its Markdown reference",
        description="Print the JSON Schema (2020-12) of ops.yaml, made from the models that "
        "validate it: every key with its type, default and description. Editors with a YAML "
        f"language server can check a file against it. Regenerate the reference: {REGENERATE}",
    )
    schema.add_argument(
        "--markdown",
        action="store_true",
        help="print the reference (docs/configuration.md) instead: a table of keys per section",
    )
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    if args.action == "schema":
        return _schema(args)
    return _check(ctx)


def _schema(args: argparse.Namespace) -> Outcome:
    # Neither reads a config file: the schema is the models', and a broken ops.yaml must not
    # keep anyone from reading what it should say.
    if args.markdown:
        text = settings_reference()
        return Outcome({"markdown": text}, [Text(text.rstrip("\n"))])
    schema = settings_schema()
    return Outcome(schema, [Text(json.dumps(schema, ensure_ascii=False, indent=2))])


def _check(ctx: Context) -> Outcome:
    settings = ctx.settings
    path, why = ctx.config_choice
    source = f"{path} ({why})" if path else f"built-in defaults ({why})"
    backup = settings.backup
    data = {"file": str(path) if path else None, "settings": settings.model_dump(mode="json")}
    lines = [
        f"{source}: OK",
        f"  state_dir      {settings.state_dir}",
        f"  repositories   {', '.join(r.name for r in backup.repositories) or '(none)'}",
        f"  sources        {', '.join(s.name for s in backup.sources) or '(none)'}",
        f"  writer key     {backup.writer_key or '(not set)'}",
        f"  identity       {backup.identity or '(not set: restores and drills run elsewhere)'}",
    ]
    return Outcome(data, ["\n".join(lines)])
