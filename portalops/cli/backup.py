"""``ops backup keygen | init | run | list | restore | ls | dump | diff | find | stats |
check | forget | repair-index | unlock`` (Article 11)."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.core.errors import BadInput, ExitCode
from portalops.core.units import age, size

if TYPE_CHECKING:
    from portalops.backup.jobs.access import Keys
    from portalops.backup.jobs.prune import RetentionRun
    from portalops.backup.repo.repository import Repository
    from portalops.backup.repo.snapshot import Snapshot, SnapshotRef
    from portalops.backup.repo.tree import Node

# The engine is imported by each handler, for what it does: building the parser (``--help``,
# completion) and listing snapshots pay neither for the writer's pipeline nor for the
# database clients and cloud SDKs of restores and remote storages.


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("backup", help="Art. 11 backups: keys, repositories, snapshots")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = sub.add_parser("keygen", help="write a new identity and writer key (both 0600)")
    p.add_argument(
        "--identity",
        type=Path,
        required=True,
        metavar="FILE",
        help="the private identity: reads backups; keep it on the drill host or offline",
    )
    p.add_argument(
        "--writer-key",
        type=Path,
        required=True,
        metavar="FILE",
        help="the writer key for backup hosts: can add backups, cannot read them",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing key files")

    p = sub.add_parser("init", help="create the configured repositories")
    _repository_option(p)
    _key_parsers(sub)

    p = sub.add_parser(
        "run",
        help="back up every configured source into every repository",
        description="Back up every source of backup.sources into every repository of "
        "backup.repositories (Art. 11), with the writer key only: this host can add "
        "snapshots but never read, change or delete them. Writes backup-status.json and the "
        "portalops_backup_* metrics for node_exporter, and logs each source's outcome per "
        "repository (at INFO in the journal). One run per host at a time.\n\n"
        "Exit code 1 when a source failed, 3 when a repository could not be reached or the "
        "status could not be recorded.",
        epilog="""\
examples:
  ops backup run                              every source into every repository
  ops backup run --source webroot --source portal-db
  ops backup run --repository offsite -v      one repository, with debug logs""",
    )
    p.add_argument("--source", action="append", metavar="S", help="only this source (repeat)")
    _repository_option(p)

    p = sub.add_parser(
        "list",
        help="snapshots, newest last",
        description="List the snapshots of every repository (or those of --repository), "
        "newest last. Without backup.identity only the names are readable (writer hosts); "
        "category, file count and size need the identity. A snapshot dated later than the "
        "storage allows is marked '!': it is never 'latest'.",
        epilog="""\
examples:
  ops backup list
  ops backup list --source portal-db --json
  ops backup list --repository offsite""",
    )
    p.add_argument("--source", metavar="S", help="only this source's snapshots")
    _repository_option(p)

    p = sub.add_parser(
        "restore",
        help="restore a snapshot into a directory, or a database snapshot into a server",
        description="Restore a snapshot (an id, a unique prefix, or 'latest' with --source) "
        "into --target (made if needed), verifying every byte; nothing is ever written "
        "outside it, and set-user/group-id bits are dropped unless --keep-setid. A database "
        "snapshot (postgres, mariadb) can instead be loaded into a running server with "
        "--to-database. Needs backup.identity.",
        epilog="""\
examples:
  ops backup restore latest --source webroot --target /tmp/restore
  ops backup restore 3f2a9c1e --target /tmp/restore --path var/www/html/index.php
  ops backup restore latest --source portal-db \\
      --to-database "host=/var/run/postgresql user=postgres" --database portal --as portal_check
  ops backup restore latest --source cms-db --to-database mariadb://root@localhost \\
      --defaults-file /root/.my.cnf""",
    )
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot id (or prefix), or 'latest'")
    p.add_argument("--source", metavar="S", help="with 'latest': which source")
    p.add_argument("--target", type=Path, metavar="DIR", help="restore the files here")
    p.add_argument("--path", action="append", metavar="P", help="only this path (repeat)")
    p.add_argument(
        "--keep-setid",
        action="store_true",
        help="restore files' set-user/group-id bits (dropped by default: a backup host wrote them)",
    )
    p.add_argument("--repository", metavar="R", help="read from this repository")
    db = p.add_argument_group("into a database server (postgres and mariadb snapshots)")
    db.add_argument(
        "--to-database",
        metavar="DSN",
        help="load the dumps into this server: a libpq DSN, or mariadb://[user@]host[:port]",
    )
    db.add_argument("--database", action="append", metavar="DB", help="only this database")
    db.add_argument("--as", dest="rename", metavar="NAME", help="restore one database as NAME")
    db.add_argument(
        "--defaults-file", type=Path, metavar="FILE", help="MariaDB: 0600 option file (password)"
    )

    _browse_parsers(sub)

    p = sub.add_parser(
        "copy",
        help="copy snapshots from one repository into another, verified",
        description="Copy the snapshots of repository --from (of --source) that repository "
        "--to lacks: moving to a new offsite, seeding a new bucket, filling in nights one "
        "copy missed. Only the blobs the target lacks move; each is checked against its id "
        "as it is read, the packs written are read back, and only then is the snapshot "
        "written (same time, tree and stats). Into a repository made with another writer "
        "key (another id-key) every blob is renamed: each snapshot's data is read whole and "
        "its trees written again, so its tree differs there. Future-dated snapshots are "
        "skipped, and snapshots holding "
        "entries a restore refuses are not copied. Needs backup.identity.\n\n"
        "Exit code 1 when a snapshot could not be copied, 3 when a repository could not be "
        "reached.",
        epilog="""\
examples:
  ops backup copy --from local --to offsite --dry-run
  ops backup copy --from local --to new-offsite
  ops backup copy --from offsite --to local --source portal-db --json
  ops backup copy --from local --to local-2027   # made with a new writer key: renamed""",
    )
    p.add_argument("--from", dest="from_", required=True, metavar="R", help="read from R")
    p.add_argument("--to", required=True, metavar="R", help="write into R")
    p.add_argument("--source", action="append", metavar="S", help="only this source (repeat)")
    p.add_argument("--dry-run", action="store_true", help="say what would be copied, copy nothing")

    p = sub.add_parser(
        "check",
        help="verify the repository (structure, or data with --read-data)",
        description="Verify each repository: every snapshot, tree and index entry refers to "
        "data that exists (structure), and with --read-data also download and decrypt packs "
        "and verify every blob's hash, all of them or a rotating PCT% (ten runs of "
        "10% read everything). Holds a shared lock: backups may run meanwhile, "
        "prune may not. Needs backup.identity. Exit code 1 when a problem is found.",
        epilog="""\
examples:
  ops backup check                            structure only, quick
  ops backup check --read-data 10             and a rotating tenth of the data
  ops backup check --read-data --repository offsite""",
    )
    p.add_argument(
        "--read-data",
        nargs="?",
        const=100.0,
        type=_percent,
        metavar="PCT",
        help="also download and verify packs: all, or a rotating PCT%% subset",
    )
    _repository_option(p)

    p = sub.add_parser("forget", help="apply the retention policy; --prune frees the space")
    p.add_argument("--prune", action="store_true", help="then remove data no snapshot uses")
    p.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")
    _repository_option(p)

    p = sub.add_parser(
        "repair-index",
        help="rebuild the index from the packs themselves (when prune refuses an inconsistent one)",
    )
    p.add_argument("--dry-run", action="store_true", help="read and report; write nothing")
    _repository_option(p)

    p = sub.add_parser(
        "unlock",
        help="remove stale locks: not refreshed for 30 min by the storage's clock, "
        "or of gone processes on this host",
    )
    p.add_argument("--all", action="store_true", help="remove every lock, even live ones")
    _repository_option(p)

    parser.set_defaults(run=run)


def _browse_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ls``, ``dump``, ``diff``, ``find`` and ``stats``: what snapshots hold, without
    restoring them (backup/jobs/browse.py, backup/jobs/stats.py)."""
    p = sub.add_parser(
        "ls",
        help="list a snapshot's files, like ls -l, without restoring them",
        description="List the directory PATH of a snapshot (its top by default), or the one "
        "entry PATH names: type and permissions, owner, size, modification time (UTC), name. "
        "Entries a restore would refuse are named apart. Needs backup.identity.",
        epilog="""\
examples:
  ops backup ls latest --source webroot
  ops backup ls 3f2a9c1e var/www/html --recursive
  ops backup ls latest --source portal-db --json""",
    )
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot id (or prefix), or 'latest'")
    p.add_argument("path", nargs="?", metavar="PATH", help="inside the snapshot (default: top)")
    p.add_argument("-R", "--recursive", action="store_true", help="everything below PATH")
    _reading_options(p)

    p = sub.add_parser(
        "dump",
        help="write one file of a snapshot to stdout (or --output), every byte verified",
        description="Write the file PATH of a snapshot to stdout, or to --output FILE (made "
        "0600, in place only once complete), reading and verifying blob by blob: a damaged "
        "blob stops it with exit code 1 and says how many bytes went out. Needs "
        "backup.identity.",
        epilog="""\
examples:
  ops backup dump latest portal.dump --source portal-db | pg_restore -l
  ops backup dump 3f2a9c1e etc/nginx/nginx.conf
  ops backup dump latest var/www/html/index.php --source webroot --output /tmp/index.php""",
    )
    p.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot id (or prefix), or 'latest'")
    p.add_argument("path", metavar="PATH", help="the file, inside the snapshot")
    p.add_argument("--output", type=Path, metavar="FILE", help="write here instead of stdout")
    _reading_options(p)

    p = sub.add_parser(
        "diff",
        help="what changed between two snapshots of one source",
        description="Compare two snapshots of one source: files and directories added (+), "
        "removed (-), modified (M: content, or a link's target), changed type (T) or only "
        "metadata (U: permissions, owner, modification time), with sizes. Directories whose "
        "trees are identical are not opened. Needs backup.identity.",
        epilog="""\
examples:
  ops backup diff 3f2a9c1e 9b07d4aa
  ops backup diff 3f2a9c1e latest --source webroot --json""",
    )
    p.add_argument("old", metavar="SNAPSHOT1", help="the earlier snapshot (id, prefix, 'latest')")
    p.add_argument("new", metavar="SNAPSHOT2", help="the later one")
    _reading_options(p)

    p = sub.add_parser(
        "find",
        help="which snapshots hold a file, with its size and time",
        description="Search every snapshot (of --source, since --since) for entries whose "
        "name matches PATTERN (a shell glob: '*.sql', 'index.php'), or whose path does when "
        "PATTERN holds a '/' ('var/www/*/config.php'). Oldest snapshot first. Needs "
        "backup.identity.",
        epilog="""\
examples:
  ops backup find wp-config.php
  ops backup find '*.sql' --source portal-db --since 2026-11-01
  ops backup find 'srv/portals/*/index.php' --json""",
    )
    p.add_argument("pattern", metavar="PATTERN", help="a glob on names, or on paths with '/'")
    p.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="only snapshots since (UTC)")
    _reading_options(p, "only this source's snapshots")

    p = sub.add_parser(
        "stats",
        help="size, stored size and deduplication per source and category; 30-day growth",
        description="For each source, each Art. 11.2 category and the repository: the files' "
        "bytes in the latest snapshot and over all snapshots, the stored bytes of the "
        "distinct blobs they use (compressed, before encryption; a blob two sources share "
        "counts for each, once in the totals), the deduplication ratio (all snapshots' bytes "
        "/ stored), and what the last 30 days' runs added. Sizes come from the trees and the "
        "index. Needs backup.identity.",
        epilog="""\
examples:
  ops backup stats
  ops backup stats --source portal-db --json""",
    )
    _reading_options(p, "only this source")


def _key_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``key add``, ``key list``, ``key remove`` (backup/jobs/keys.py)."""
    p = sub.add_parser(
        "key",
        help="who else can read the repositories: add, list, remove",
        description="Give another age key the right to read the repositories (a second "
        "admin, a sealed copy in the safe), list who can, take it back. Nothing is "
        "re-encrypted: 'add' writes the repository's identity encrypted to the new key "
        "(a wrap, under identities/), 'remove' deletes those wraps.",
    )
    keys = p.add_subparsers(dest="key_action", required=True, metavar="ACTION")
    k = keys.add_parser(
        "add",
        help="let another age key read the repositories (needs backup.identity)",
        description="Write, in each repository, a wrap of the identities in this host's "
        "identity file (run it where the repository's identity is held) "
        "for another age public key: its holder then sets backup.identity to their own "
        "identity file and reads everything, old and new. Each run writes a new wrap.",
        epilog="""\
examples:
  ops backup key add --new-identity /root/second-admin.txt      # made here, 0600
  ops backup key add --recipient age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq
  ops backup key add --recipient age1... --repository offsite""",
    )
    who = k.add_mutually_exclusive_group(required=True)
    who.add_argument("--recipient", metavar="AGE1…", help="an age public key (age-keygen -y)")
    who.add_argument(
        "--new-identity", type=Path, metavar="FILE", help="make a new identity file and add it"
    )
    _repository_option(k)
    k = keys.add_parser(
        "list",
        help="the age keys that can read each repository, and how",
        description="Per repository: its own recipient (every object is encrypted to it) "
        "and every key with a wrap, with the storage's time of its oldest wrap. Names under "
        "identities/ are what the storage holds: a backup host could add names there too "
        "(they open nothing), so read the list as claims to check.",
    )
    _repository_option(k)
    k.set_defaults(recipient=None, new_identity=None)
    k = keys.add_parser(
        "remove",
        help="delete the wraps for an age key (needs backup.identity)",
        description="Delete the wraps for RECIPIENT in each repository: that key alone "
        "opens nothing from then on. A holder who used it has seen the repository's "
        "identity, which still opens everything encrypted to it (docs/backup.md, 'Keys: "
        "who holds what'). Under S3 Object Lock a wrap stays until its retention ends.",
    )
    k.add_argument("--recipient", required=True, metavar="AGE1…", help="the key to take back")
    _repository_option(k)
    k.set_defaults(new_identity=None)
    k = keys.add_parser(
        "rotate",
        help="a new identity and writer key for what is written from now on (needs the identity)",
        description="For a lost or leaving identity: write a new identity and a new writer "
        "key (same id-key and chunker seed: nothing is re-uploaded, blobs still deduplicate; "
        "the new key's recipient only; the new identity file keeps the old identities after its "
        "own), wrap this host's identities for the new one "
        "in each repository (it reads every snapshot, old and new), then post a recipients "
        "notice: backup hosts still on the old writer key are refused from then on (exit "
        "3). Install the new writer key on every backup host and the new identity where "
        "restores run. What it cannot do: the old identity still opens everything written "
        "before (docs/backup.md, 'Rotating the identity'). Re-running it with the same two "
        "files finishes an interrupted rotation.",
        epilog="""\
examples:
  ops backup key rotate --new-identity /root/id-2027.txt --writer-key /root/writer-2027.key""",
    )
    k.add_argument("--new-identity", type=Path, required=True, metavar="FILE", help="written 0600")
    k.add_argument("--writer-key", type=Path, required=True, metavar="FILE", help="written 0600")
    _repository_option(k)
    k.set_defaults(recipient=None)


def _reading_options(
    p: argparse.ArgumentParser, source: str = "with 'latest': which source"
) -> None:
    """--source and --repository, as the commands that read snapshots take them."""
    p.add_argument("--source", metavar="S", help=source)
    p.add_argument("--repository", metavar="R", help="read from this repository")


def _repository_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", action="append", metavar="R", help="only this one (repeat)")


def _day(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}")
    return value


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    handler = {
        "keygen": _keygen,
        "init": _init,
        "key": _key,
        "run": _run,
        "list": _list,
        "restore": _restore,
        "ls": _ls,
        "dump": _dump,
        "diff": _diff,
        "find": _find,
        "stats": _stats,
        "copy": _copy,
        "check": _check,
        "forget": _forget,
        "unlock": _unlock,
        "repair-index": _repair_index,
    }[args.action]
    return handler(ctx, args)


def _keygen(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.repo.keys import keygen

    public, fingerprint = keygen(args.identity, args.writer_key, force=args.force)
    data = {
        "identity": str(args.identity),
        "writer_key": str(args.writer_key),
        "recipient": public,
        "key_fingerprint": fingerprint,
    }
    text = (
        f"identity   {args.identity}  (private: keep it on the drill host or offline)\n"
        f"writer key {args.writer_key}  (for backup hosts: it cannot read backups)\n"
        f"recipient  {public}\n"
        "Next: set backup.writer_key (and, where restores run, backup.identity) in the config, "
        "then 'ops backup init'."
    )
    return Outcome(data, [text])


def _key(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.keys import checked_recipient, list_holders
    from portalops.backup.repo.keys import IdentityMissing

    where = str(ctx.config_path or "the config")
    recipient = checked_recipient(args.recipient) if args.recipient else None
    repos, keys = _open_all(ctx, args.repository)
    if args.key_action == "list":
        docs = [
            {"repository": repo.name, **h.to_json()} for repo in repos for h in list_holders(repo)
        ]
        rows = [
            (d["repository"], d["recipient"], d["how"],
             f"{d['added']:%Y-%m-%d %H:%M}Z" if d["added"] else "", len(d["objects"]))
            for d in docs
        ]  # fmt: skip
        columns = ["repository", "recipient", "how", "added", "wraps"]
        return Outcome(docs, [table(None, columns, rows)])
    if keys.identity is None:
        raise IdentityMissing(where)
    if args.key_action == "add":
        return _key_add(repos, recipient, args.new_identity, where)
    if args.key_action == "rotate":
        return _key_rotate(repos, args.new_identity, args.writer_key, where)
    return _key_remove(repos, str(recipient), where)


def _key_rotate(repos: list[Repository], identity: Path, writer_key: Path, where: str) -> Outcome:
    from portalops.backup.jobs.keys import rotate

    done = rotate(repos, identity, writer_key, where)
    lines = [
        f"{'continued' if done.resumed else 'new'} identity {done.identity_file} and writer key "
        f"{done.writer_key_file} (0600); recipient {done.recipient}",
        *(f"{name}: wrap for the new identity and recipients notice written" for name, _ in
          done.wraps),
        "Next: 1. install the new writer key on every backup host (ops_agent_writer_key_file; "
        "hosts on the old one now stop with exit 3); 2. set backup.identity to the new "
        "identity where restores run, and on a host that prunes or copies without a writer "
        f"key, backup.recipients: [{done.recipient}]; 3. keep the old identity offline until "
        "you are sure (the new one reads everything through its wrap).",
    ]  # fmt: skip
    for name, others in done.wraps:
        if others:
            lines.append(
                f"{name}: {', '.join(others)} read through wraps of the old identity only "
                "(what was written before): 'ops backup key add --recipient KEY' with the new "
                "identity gives them the rest, 'key remove' takes theirs away"
            )
    data = {
        "recipient": done.recipient,
        "identity_file": str(done.identity_file),
        "writer_key_file": str(done.writer_key_file),
        "resumed": done.resumed,
        "repositories": [{"repository": n, "other_wraps": o} for n, o in done.wraps],
    }
    return Outcome(data, [*lines])


def _key_add(
    repos: list[Repository], recipient: str | None, new_identity: Path | None, where: str
) -> Outcome:
    from portalops.backup.jobs.keys import add_recipient
    from portalops.backup.repo.keys import create_identity

    if recipient is None and new_identity is not None:
        recipient = create_identity(new_identity)
    assert recipient is not None  # noqa: S101 - argparse requires one of the two
    docs, lines = [], []
    for repo in repos:
        holder, written = add_recipient(repo, recipient, where)
        docs.append({"repository": repo.name, "written": written, **holder.to_json()})
        lines.append(
            f"{repo.name}: {recipient} "
            + ("can read it now (wrap written)" if written else "could already: nothing written")
        )
    if new_identity is not None:
        lines.append(f"new identity in {new_identity} (0600): set backup.identity to it to use it")
    own = repos[0].require_identity(where).public
    lines.append(
        f"the repository's recipient (this host's identity): {own}; a host reading through "
        "the new key that also prunes or copies sets backup.recipients: [that key]"
    )
    data = {
        "recipient": recipient,
        "identity_file": str(new_identity) if new_identity else None,
        "repository_recipient": own,
        "repositories": docs,
    }
    return Outcome(data, [*lines])


def _key_remove(repos: list[Repository], recipient: str, where: str) -> Outcome:
    from portalops.backup.jobs.keys import remove_recipient

    docs, lines = [], []
    for repo in repos:
        holder = remove_recipient(repo, recipient, where)
        removed = holder.objects if holder is not None else []
        docs.append({"repository": repo.name, "recipient": recipient, "deleted": removed})
        lines.append(f"{repo.name}: {len(removed)} wrap(s) for {recipient} deleted")
    if not any(d["deleted"] for d in docs):
        raise BadInput(f"{recipient} has no wrap in {', '.join(r.name for r in repos)}")
    lines.append(
        "That key alone opens nothing now. If its holder ever used it, they have seen the "
        "repository's identity: see docs/backup.md, 'Keys: who holds what'."
    )
    return Outcome({"recipient": recipient, "repositories": docs}, [*lines])


def _init(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.access import init_repositories

    done = init_repositories(ctx.backup_settings, args.repository, ctx.config_path)
    rows = [
        (d.repository, d.location, d.id, "created" if d.created else "already initialised")
        for d in done
    ]
    notes = [f"{d.repository}: {d.protection}" for d in done if d.protection is not None]
    docs = [
        {"repository": d.repository, "location": d.location, "id": d.id,
         "created": d.created, "protection": d.protection}
        for d in done
    ]  # fmt: skip
    return Outcome(docs, [table(None, ["repository", "location", "id", "state"], rows), *notes])


def _run(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.access import load_keys, select, select_sources
    from portalops.backup.jobs.run import run_backup
    from portalops.backup.jobs.status import record_run
    from portalops.cli.progress import progress_bars
    from portalops.core.runlock import LOCK_NAME as RUN_LOCK_NAME
    from portalops.core.runlock import run_lock

    # The sections this command reads, validated alone: a mistake in the monitor or on-call
    # section (reported by `ops config check`) does not stop the night's backup.
    backup = ctx.backup_settings
    state_dir = ctx.state_dir
    textfile_dir = ctx.metrics_settings.textfile_dir
    where = ctx.config_path or "the config"
    sources = select_sources(backup, args.source, ctx.config_path, "back up")
    repositories = select(backup, args.repository, ctx.config_path)
    keys = load_keys(backup)
    # One run per host at a time (cron and a hand-started run, or a run still going at the
    # next night's start); the status file below is read, merged and rewritten under it too.
    with run_lock(state_dir / RUN_LOCK_NAME, "ops backup run"):
        with progress_bars(ctx.env) as bars:
            results = run_backup(sources, repositories, keys, state_dir, bars)
        recorded = record_run(
            state_dir,
            textfile_dir,
            results,
            ctx.env.now(),
            [s.name for s in backup.sources],
            [r.name for r in backup.repositories],
            str(where),
        )
    rows = [
        (
            r.source,
            r.category,
            r.repository,
            "ok" if r.ok else "FAILED",
            r.snapshot[:8] if r.snapshot else "",
            r.files,
            size(r.bytes),
            size(r.bytes_added),
            f"{r.duration:.2f}s" if r.duration < 10 else f"{r.duration:.0f}s",
            r.error or (f"{len(r.vanished)} vanished while reading" if r.vanished else ""),
        )
        for r in results
    ]
    failed = [r for r in results if not r.ok]
    columns = ["source", "category", "repository", "result", "snapshot", "files", "size", "added"]
    # A repository that could not be reached (3) outranks a source that failed (1). Status or
    # metrics that could not be written are operational too: alerts would go stale (logged).
    code = max((r.exit_code for r in failed), default=ExitCode.OK)
    if recorded.problems:
        code = max(code, ExitCode.OPERATIONAL)
    return Outcome(
        {
            "ok": not failed,
            "results": [r.to_json() for r in results],
            "recorded": recorded.to_json(),
        },
        [table(None, [*columns, "time", "note"], rows)],
        ExitCode(code),
    )


def _open_all(ctx: Context, names: list[str] | None) -> tuple[list[Repository], Keys]:
    from portalops.backup.jobs.access import load_keys, open_repository, select

    backup = ctx.backup_settings
    keys = load_keys(backup)
    return [open_repository(s, keys) for s in select(backup, names, ctx.config_path)], keys


def _list(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.access import list_snapshots

    repos, keys = _open_all(ctx, args.repository)
    docs = list_snapshots(repos, keys, args.source)
    rows = [
        (
            d["short_id"],
            d["repository"],
            d["source"],
            d["category"] or "",
            d["time"].strftime("%Y-%m-%d %H:%M:%SZ") + (" !" if d["future_dated"] else ""),
            "future" if d["future_dated"] else age(d["time"]),
            "" if d["files"] is None else d["files"],
            "" if d["bytes"] is None else size(d["bytes"]),
        )
        for d in docs
    ]
    human: list[Any] = [
        table(
            None, ["id", "repository", "source", "category", "time", "age", "files", "size"], rows
        )
    ]
    if keys.identity is None and docs:
        human.append("(category, files and size need backup.identity; names alone shown)")
    if any(d["future_dated"] for d in docs):
        human.append(
            "! stated later than the storage's own time for the object allows (a forged "
            "snapshot or a writer's clock far ahead): never 'latest', never drilled or counted "
            "by retention; 'ops backup check' names it"
        )
    unreadable = [d["unreadable"] for d in docs if d["unreadable"]]
    human += [f"UNREADABLE {u}" for u in unreadable]
    return Outcome(docs, human, ExitCode.PROBLEM_FOUND if unreadable else ExitCode.OK)


def _restore(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.access import resolve_snapshot
    from portalops.backup.repo.keys import IdentityMissing
    from portalops.backup.restore.files import restore
    from portalops.cli.progress import progress_bars

    names = [args.repository] if args.repository else None
    repos, keys = _open_all(ctx, names)
    repo = repos[0]
    if keys.identity is None:
        raise IdentityMissing(ctx.config_path or "the config")
    if (args.target is None) == (args.to_database is None):
        raise BadInput("say where to restore: --target DIR or --to-database DSN (one of them)")
    database_only = ("database", "rename", "defaults_file")
    if args.to_database is None and any(getattr(args, a) for a in database_only):
        raise BadInput("--database, --as and --defaults-file go with --to-database")
    ref = resolve_snapshot(repo, args.snapshot, args.source)
    snapshot = repo.read_snapshot(ref)
    repo.load_index()
    if args.to_database is not None:
        return _restore_database(ctx, args, repo, ref, snapshot)
    with progress_bars(ctx.env) as bars:
        result = restore(
            repo, snapshot, args.target, args.path, bars(f"restore {ref.short_id}"),
            name=f"{ref.source}@{ref.short_id}", keep_setid=args.keep_setid,
        )  # fmt: skip
    data = {
        **_restored_from(repo, ref),
        "target": str(args.target),
        "files": result.files,
        "dirs": result.dirs,
        "symlinks": result.symlinks,
        "bytes": result.bytes,
        "verified_blobs": result.verified_blobs,
        "seconds": round(result.seconds, 3),
        "warnings": result.warnings,
    }
    text = (
        f"restored {ref.source}@{ref.short_id} ({ref.time:%Y-%m-%d %H:%M:%SZ}) from {repo.name} "
        f"into {args.target}: {result.files} files, {result.dirs} directories, "
        f"{size(result.bytes)}, every byte verified, in {result.seconds:.1f}s"
    )
    return Outcome(data, [text, *result.warnings])


def _repository_for_reading(ctx: Context, name: str | None) -> Repository:
    """The repository (``name``, else the first configured) with its index loaded, for the
    commands that read what snapshots hold (the identity is needed)."""
    from portalops.backup.repo.keys import IdentityMissing

    repos, keys = _open_all(ctx, [name] if name else None)
    repo = repos[0]
    if keys.identity is None:
        raise IdentityMissing(ctx.config_path or "the config")
    repo.load_index()
    return repo


def _snapshot_for_reading(
    ctx: Context, args: argparse.Namespace
) -> tuple[Repository, SnapshotRef, Snapshot]:
    """:func:`_repository_for_reading`, the snapshot asked for and its body."""
    from portalops.backup.jobs.access import resolve_snapshot

    repo = _repository_for_reading(ctx, args.repository)
    ref = resolve_snapshot(repo, args.snapshot, args.source)
    return repo, ref, repo.read_snapshot(ref)


def _ls(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.browse import list_snapshot, text

    repo, ref, snapshot = _snapshot_for_reading(ctx, args)
    listing = list_snapshot(repo, ref, snapshot, args.path, recursive=args.recursive)
    data = {
        **_restored_from(repo, ref),
        "path": listing.path,
        "entries": [e.to_json() for e in listing.entries],
        "refused": listing.refused,
    }
    rows = [
        (
            e.permissions(),
            text(e.node.user) if e.node.user else str(e.node.uid),
            text(e.node.group) if e.node.group else str(e.node.gid),
            str(e.node.size) if e.node.type.value == "file" else "",
            e.mtime().strftime("%Y-%m-%d %H:%M"),
            text(e.path) + (f" -> {text(e.node.target)}" if e.node.target is not None else ""),
        )
        for e in listing.entries
    ]
    human: list[Any] = [table(None, ["mode", "user", "group", "size", "modified", "path"], rows)]
    human += [f"left out (a restore refuses it): {r}" for r in listing.refused]
    return Outcome(data, human)


def _dump(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.browse import dump_file

    if args.output == Path("-"):
        args.output = None
    if args.output is None and args.json:
        raise BadInput("--json with 'backup dump' needs --output FILE: stdout carries the file")
    if args.output is None and ctx.env.stdout_is_tty:
        raise BadInput("stdout is a terminal: pipe the file somewhere, or give --output FILE")
    if args.output is not None:
        _check_output(args.output)
    repo, ref, snapshot = _snapshot_for_reading(ctx, args)
    if args.output is None:
        out = ctx.env.stdout
        out.flush()

        def write(data: bytes) -> None:  # the path is checked before the first byte
            out.buffer.write(data)

        dump_file(repo, ref, snapshot, args.path, write)
        out.flush()
        return Outcome(None, raw="")
    node = _dump_to_file(repo, ref, snapshot, args.path, args.output)
    data = {**_restored_from(repo, ref), "path": args.path, "output": str(args.output),
            "bytes": node.size}  # fmt: skip
    return Outcome(data, [f"wrote {args.output}: {size(node.size)}, every byte verified"])


def _diff(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.access import resolve_snapshot
    from portalops.backup.jobs.browse import diff_snapshots, text

    repo = _repository_for_reading(ctx, args.repository)
    old_ref = resolve_snapshot(repo, args.old, args.source)
    new_ref = resolve_snapshot(repo, args.new, args.source)
    changes = diff_snapshots(
        repo, (old_ref, repo.read_snapshot(old_ref)), (new_ref, repo.read_snapshot(new_ref))
    )
    counts = {kind: 0 for kind in ("added", "removed", "modified", "type", "metadata")}
    for change in changes:
        counts[change.change] += 1
    added = sum(c.new.size for c in changes if c.change == "added" and c.new is not None)
    removed = sum(c.old.size for c in changes if c.change == "removed" and c.old is not None)
    data = {
        "repository": repo.name,
        "source": old_ref.source,
        "old": {"snapshot": old_ref.id, "time": old_ref.time},
        "new": {"snapshot": new_ref.id, "time": new_ref.time},
        "changes": [c.to_json() for c in changes],
        "summary": {**counts, "bytes_added": added, "bytes_removed": removed},
    }
    marks = {"added": "+", "removed": "-", "modified": "M", "type": "T", "metadata": "U"}
    human: list[Any] = [
        f"{marks[c.change]}  {text(c.path)}" + (f"  ({', '.join(c.what)})" if c.what else "")
        for c in changes
    ]
    human.append(
        f"{old_ref.source}@{old_ref.short_id} -> @{new_ref.short_id}: {counts['added']} added "
        f"({size(added)}), {counts['removed']} removed ({size(removed)}), "
        f"{counts['modified']} modified, {counts['type']} changed type, "
        f"{counts['metadata']} metadata only"
    )
    return Outcome(data, human)


def _find(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.browse import Entry, find_in_snapshots, text
    from portalops.backup.repo.repository import DamagedObject

    repo = _repository_for_reading(ctx, args.repository)
    refs = [r for r in repo.snapshots(args.source) if args.since is None or r.time >= args.since]
    readable, unreadable = [], []
    for ref in refs:
        try:
            readable.append((ref, repo.read_snapshot(ref)))
        except DamagedObject as exc:  # named; the others are still searched
            unreadable.append(f"{repo.name}: {ref.key}: {exc.args[2]}")
    found = find_in_snapshots(repo, readable, args.pattern)
    rows = [
        (
            f.snapshot.short_id,
            f.snapshot.source,
            f.snapshot.time.strftime("%Y-%m-%d %H:%MZ"),
            str(f.node.size) if f.node.type.value == "file" else f.node.type.value,
            Entry(f.path, f.node).mtime().strftime("%Y-%m-%d %H:%M"),
            text(f.path),
        )
        for f in found
    ]
    human: list[Any] = [
        table(None, ["snapshot", "source", "taken", "size", "modified", "path"], rows),
        f"{len(found)} entries in {len({f.snapshot.id for f in found})} of {len(readable)} "
        "snapshots searched",
        *(f"UNREADABLE {u}" for u in unreadable),
    ]
    code = ExitCode.PROBLEM_FOUND if unreadable else ExitCode.OK
    return Outcome([f.to_json() for f in found], human, code)


def _stats(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.stats import repository_stats

    repo = _repository_for_reading(ctx, args.repository)
    stats = repository_stats(repo, args.source, ctx.env.clock())
    data = {
        "repository": repo.name,
        "sources": [u.to_json() for u in stats.sources],
        "categories": [u.to_json() for u in stats.categories],
        "total": stats.total.to_json(),
        "unreadable": stats.unreadable,
    }

    def row(label: str, u: Any) -> tuple[str, ...]:
        return (
            label, str(u.snapshots), size(u.logical_latest), size(u.logical_all),
            size(u.stored), f"{u.dedup:.1f}x" if u.dedup is not None else "",
            size(u.added_30d),
        )  # fmt: skip

    rows = [row(u.name, u) for u in stats.sources]
    rows += [row(f"category {u.name}", u) for u in stats.categories]
    rows.append(row(f"repository {repo.name}", stats.total))
    columns = ["", "snapshots", "latest", "all snapshots", "stored", "dedup", "added 30 days"]
    human: list[Any] = [table(None, columns, rows)]
    if stats.total.missing_blobs:
        human.append(
            f"MISSING {stats.total.missing_blobs} blobs the trees refer to are in no index "
            "('ops backup check' says more)"
        )
    human += [f"UNREADABLE {u}" for u in stats.unreadable]
    problem = stats.unreadable or stats.total.missing_blobs
    return Outcome(data, human, ExitCode.PROBLEM_FOUND if problem else ExitCode.OK)


def _check_output(output: Path) -> None:
    """Before anything is read: --output names a file that can be put in place (an existing
    one is replaced, as cp does; a directory is refused)."""
    if not output.name or output.name in (".", ".."):
        raise BadInput(f"--output {output}: give a file name")
    if output.is_dir():
        raise BadInput(f"--output {output} is a directory; give the file's name in it")
    if not output.parent.is_dir():
        raise BadInput(f"--output {output}: no directory {output.parent}")


def _dump_to_file(
    repo: Repository, ref: SnapshotRef, snapshot: Snapshot, path: str, output: Path
) -> Node:
    """Into a new 0600 file beside ``output`` (a name of its own: an interrupted dump
    blocks no later one), renamed onto it only once complete and synced."""
    import tempfile

    from portalops.backup.jobs.browse import dump_file

    try:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
    except OSError as exc:
        raise BadInput(
            f"--output {output}: cannot write in {output.parent}: {exc.strerror}"
        ) from None
    partial = Path(name)
    try:
        with open(fd, "wb") as out:
            node = dump_file(repo, ref, snapshot, path, out.write)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.replace(partial, output)
        except OSError as exc:
            raise BadInput(
                f"--output {output}: cannot put the file in place: {exc.strerror}"
            ) from None
        directory = os.open(output.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return node


def _copy(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.copy import copy_snapshots
    from portalops.backup.repo.keys import IdentityMissing
    from portalops.cli.progress import progress_bars

    if args.from_ == args.to:
        raise BadInput(f"--from and --to both name {args.from_!r}: nothing to copy")
    (src, dst), keys = _open_all(ctx, [args.from_, args.to])
    if keys.identity is None:
        raise IdentityMissing(ctx.config_path or "the config")
    with progress_bars(ctx.env) as bars:
        results = copy_snapshots(src, dst, args.source, dry_run=args.dry_run, progress=bars)
    rows = [
        (
            r.source,
            f"{r.time:%Y-%m-%d %H:%M:%SZ}",
            r.snapshot[:8],
            r.status,
            (r.target or "")[:8],
            r.blobs,
            size(r.bytes),
            r.error or ("renamed" if r.renamed and r.status in ("copied", "would copy") else ""),
        )
        for r in results
    ]
    columns = ["source", "time", "snapshot", "result", "in " + dst.name, "blobs", "size", "note"]
    failed = [r for r in results if not r.ok]
    counts = {
        status: sum(r.status == status for r in results)
        for status in ("copied", "present", "would copy", "skipped", "failed")
    }
    said = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "none to copy"
    summary = f"{src.name} -> {dst.name}: {len(results)} snapshot(s): {said}" + (
        " (dry run: nothing written)" if args.dry_run else ""
    )
    return Outcome(
        {
            "ok": not failed,
            "from": src.name,
            "to": dst.name,
            "dry_run": args.dry_run,
            "snapshots": [r.to_json() for r in results],
        },
        [table(None, columns, rows), summary],
        ExitCode(max((r.exit_code for r in failed), default=ExitCode.OK)),
    )


def _restored_from(repo: Repository, ref: SnapshotRef) -> dict[str, Any]:
    """What every restore's JSON says of where it came from."""
    return {"repository": repo.name, "snapshot": ref.id, "source": ref.source, "time": ref.time}


def _restore_database(
    ctx: Context,
    args: argparse.Namespace,
    repo: Repository,
    ref: SnapshotRef,
    snapshot: Snapshot,
) -> Outcome:
    from portalops.backup.restore.database import restore_snapshot_to_database
    from portalops.cli.progress import progress_bars

    with progress_bars(ctx.env) as bars:
        files, report = restore_snapshot_to_database(
            repo, snapshot, args.to_database, scratch=ctx.settings.drill.scratch_dir,
            includes=args.path, progress=bars(f"restore {ref.short_id}"),
            name=f"{ref.source}@{ref.short_id}", only=args.database, rename=args.rename,
            defaults_file=args.defaults_file, pg_bin_dir=ctx.settings.drill.postgres.bin_dir,
        )  # fmt: skip
    data = {
        **_restored_from(repo, ref),
        "engine": report.engine,
        "server": report.server,
        "databases": report.databases,
        "bytes": files.bytes,
        "ok": not report.problems,
        "problems": report.problems,
        "warnings": report.warnings,
    }
    restored = ", ".join(
        db if db == name else f"{db} as {name}" for db, name in report.databases.items()
    )
    human: list[Any] = [
        f"restored {ref.source}@{ref.short_id} ({ref.time:%Y-%m-%d %H:%M:%SZ}) from {repo.name} "
        f"into {report.engine} at {report.server}: {restored}",
        *(f"warning: {w}" for w in report.warnings),
    ]
    if report.problems:
        human += ["PROBLEMS (rows unlike the backup's record, client commands refused):"]
        human += report.problems
    else:
        human.append("every table's rows as recorded at backup")
    return Outcome(data, human, ExitCode.PROBLEM_FOUND if report.problems else ExitCode.OK)


def _check(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.check import check_shared
    from portalops.backup.jobs.prune import UNINDEXED_GRACE
    from portalops.cli.progress import progress_bars

    repos, _ = _open_all(ctx, args.repository)
    results = []
    with progress_bars(ctx.env) as bars:
        for repo in repos:
            results.append(
                check_shared(repo, args.read_data, ctx.state_dir, bars(f"check {repo.name}"))
            )
    human: list[Any] = []
    for r in results:
        state = "OK" if r.ok else f"{len(r.problems)} PROBLEM(S)"
        human.append(
            f"{r.repository}: {state} — {r.snapshots} snapshots, {r.packs} packs, {r.blobs} blobs"
            + (f", {r.packs_read} packs read and verified" if args.read_data else "")
        )
        for p in r.problems:
            human.append(f"  {p.obj}: {p.what}")
            if p.snapshots:
                human.append(f"    snapshots: {', '.join(p.snapshots)}")
            for path in p.paths:
                human.append(f"    {path}")
        if r.unreferenced_packs:
            human.append(
                f"  {len(r.unreferenced_packs)} unreferenced pack(s), left by interrupted runs "
                "(or written by one still running): harmless; 'ops backup forget --prune' "
                f"removes them once {UNINDEXED_GRACE.days} days old"
            )
        human += [f"  note: {n}" for n in r.notes]
    failed = any(not r.ok for r in results)
    return Outcome(
        {"ok": not failed, "repositories": [r.to_json() for r in results]},
        human,
        ExitCode.PROBLEM_FOUND if failed else ExitCode.OK,
    )


def _unlock(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.access import select
    from portalops.backup.repo.backends import open_storage
    from portalops.backup.repo.locks import list_locks, remove_all, remove_stale

    backup = ctx.settings.backup
    docs, rows = [], []
    for settings in select(backup, args.repository, ctx.config_path):
        storage = open_storage(settings)
        removed = remove_all(storage) if args.all else remove_stale(storage)
        remaining = list_locks(storage)
        for info in removed:
            rows.append((settings.name, "removed", info.host, info.pid, info.command))
        for info in remaining:
            rows.append((settings.name, "held", info.host, info.pid, info.command))
        docs.append(
            {
                "repository": settings.name,
                "removed": [i.key for i in removed],
                "remaining": [i.key for i in remaining],
            }
        )
    return Outcome(docs, [table(None, ["repository", "lock", "host", "pid", "command"], rows)])


def _forget(ctx: Context, args: argparse.Namespace) -> Outcome:
    from zoneinfo import ZoneInfo

    from portalops.backup.jobs.prune import forget_and_prune
    from portalops.backup.jobs.retention import Policy
    from portalops.backup.repo.keys import IdentityMissing

    settings = ctx.settings
    policy = Policy(**settings.backup.retention.model_dump())
    tz = ZoneInfo(settings.backup.schedule.timezone)
    repos, keys = _open_all(ctx, args.repository)
    if args.prune and keys.identity is None:
        raise IdentityMissing(ctx.config_path or "the config")
    docs: list[dict[str, Any]] = []
    human: list[Any] = []
    for repo in repos:
        done = forget_and_prune(repo, policy, tz, dry_run=args.dry_run, and_prune=args.prune)
        docs.append(_render_forget(repo.name, done, args.dry_run, human))
    return Outcome(docs, human)


def _render_forget(
    name: str, done: RetentionRun, dry_run: bool, human: list[Any]
) -> dict[str, Any]:
    forgotten, pruned = done.forgotten, done.pruned
    rows = [
        (
            d.snapshot.short_id,
            d.snapshot.source,
            d.snapshot.time.strftime("%Y-%m-%d %H:%M:%SZ"),
            "keep" if d.keep else ("would remove" if dry_run else "remove"),
            ", ".join(d.reasons),
        )
        for d in forgotten.decisions
    ]
    human.append(table(name, ["id", "source", "time", "action", "kept by"], rows))
    human += [f"  under Object Lock, kept for now: {item}" for item in forgotten.locked]
    doc: dict[str, Any] = {
        "repository": name,
        "dry_run": dry_run,
        "keep": [d.snapshot.id for d in forgotten.decisions if d.keep],
        "remove": [d.snapshot.id for d in forgotten.decisions if not d.keep],
        "future_dated": [d.snapshot.id for d in forgotten.decisions if d.snapshot.future_dated],
        "locked": forgotten.locked,
        "prune": None,
    }
    if pruned is not None:
        doc["prune"] = {
            "packs_before": pruned.packs_before,
            "packs_deleted": pruned.packs_deleted,
            "packs_repacked": pruned.packs_repacked,
            "packs_written": pruned.packs_written,
            "unreferenced_deleted": pruned.unreferenced_deleted,
            "bytes_freed": pruned.bytes_freed,
            "locked": pruned.locked,
        }
        verb = "would free" if dry_run else "freed"
        human.append(
            f"  prune: {pruned.packs_deleted} of {pruned.packs_before} packs removed "
            f"({pruned.packs_repacked} repacked into {pruned.packs_written}), "
            f"{verb} {size(pruned.bytes_freed)}"
        )
        human += [f"  under Object Lock, kept for now: {item}" for item in pruned.locked]
    return doc


def _repair_index(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.backup.jobs.prune import exclusive_lock
    from portalops.backup.repo.keys import IdentityMissing
    from portalops.backup.repo.repair import repair_index
    from portalops.cli.progress import progress_bars

    repos, keys = _open_all(ctx, args.repository)
    if keys.identity is None:
        raise IdentityMissing(ctx.config_path or "the config")
    docs: list[dict[str, Any]] = []
    human: list[Any] = []
    for repo in repos:
        with exclusive_lock(repo) as lock, progress_bars(ctx.env) as bars:
            result = repair_index(
                repo, dry_run=args.dry_run, lock=lock, progress=bars(f"read {repo.name}")
            )
        docs.append(result.to_json())
        verb = "would index" if args.dry_run else "indexed"
        human.append(
            f"{repo.name}: {result.packs_read} packs read, {verb} {result.blobs_indexed} blobs"
            + (
                ""
                if args.dry_run
                else f"; {result.index_objects_written} index objects written, "
                f"{result.index_objects_replaced} replaced"
            )
        )
        human += [f"  blob fails its id, left out: {item}" for item in result.dropped[:20]]
        human += [f"  pack unreadable, left out: {item}" for item in result.unreadable[:20]]
        human += [f"  under Object Lock, kept for now: {item}" for item in result.locked]
    bad = any(d["dropped"] or d["unreadable"] for d in docs)
    return Outcome(docs, human, ExitCode.PROBLEM_FOUND if bad else ExitCode.OK)
