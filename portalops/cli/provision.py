"""``ops provision [--limit HOSTS] [--check] [--diff] [--playbook NAME] [-- ANSIBLE_ARGS...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from portalops.cli.context import PROJECT_ROOT, Context
from portalops.cli.output import Outcome
from portalops.cli.parser import SERVERS_HELP


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "provision",
        help="build the servers with the playbooks (ansible-playbook, estate inventory)",
        description="Run playbooks/site.yml (or one concern's playbook) against the servers of "
        "the servers file, with the project's ansible.cfg. Exits with ansible-playbook's code. "
        "Arguments after '--' go to ansible-playbook unchanged (e.g. -- --tags ssh -e x=y).",
        epilog="""\
examples:
  ops provision --check --diff                what site.yml would change, everywhere
  ops provision --limit web2 --playbook web   one concern on one server
  ops provision --playbook monitoring -- -vv     ansible-playbook's own -vv""",
    )
    parser.add_argument(
        "--limit", metavar="HOSTS", help="only these hosts or groups (Ansible pattern)"
    )
    parser.add_argument("--check", action="store_true", help="dry run: report what would change")
    parser.add_argument("--diff", action="store_true", help="show the changes made to files")
    parser.add_argument(
        "--playbook",
        metavar="NAME",
        help="one concern: common, web, tls, database, dns, agent, monitoring (default: site)",
    )
    parser.add_argument("--servers", type=Path, metavar="FILE", help=SERVERS_HELP)
    parser.add_argument(
        "--vault-password-file",
        type=Path,
        metavar="FILE",
        help="the Ansible Vault password file for encrypted variables",
    )
    parser.add_argument("ansible_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.inventory.servers import servers_for
    from portalops.provision import (
        PlaybookFailed,
        ansible_env,
        build_argv,
        find_ansible_playbook,
        resolve_playbook,
        run_playbook,
    )

    # Bad units or servers files end here with FILE:LINE (exit 2), not as an inventory warning.
    servers = servers_for(ctx.estate, args.servers)
    playbook = resolve_playbook(PROJECT_ROOT, args.playbook)
    binary = find_ansible_playbook()
    extra = list(args.ansible_args)
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.vault_password_file is not None:
        extra = ["--vault-password-file", str(args.vault_password_file), *extra]
    argv = build_argv(
        binary, PROJECT_ROOT, playbook, limit=args.limit, check=args.check, diff=args.diff,
        extra=extra,
    )  # fmt: skip
    env = ansible_env(PROJECT_ROOT, ctx.estate.path, servers.path)
    # ansible-playbook's output is the progress report: on stdout for a person, on stderr
    # when stdout carries the --json document.
    result = run_playbook(
        argv, env, playbook, out=ctx.env.stderr if args.json else ctx.env.stdout, cwd=Path.cwd()
    )
    shown = (
        str(playbook.relative_to(PROJECT_ROOT))
        if playbook.is_relative_to(PROJECT_ROOT)
        else str(playbook)
    )
    failed = [host for host, counts in result.recap.items() if counts.problem]
    if result.returncode != 0:
        raise PlaybookFailed(shown, result.returncode, failed)
    data = {
        "playbook": shown,
        "check": args.check,
        "exit_code": result.returncode,
        "hosts": {host: vars(counts) for host, counts in result.recap.items()},
    }
    # A person has just read ansible-playbook's own PLAY RECAP: nothing to add.
    return Outcome(data)
