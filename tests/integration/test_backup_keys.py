"""``ops backup key add | list | remove``: another age key reads the repository through a wrap
(local and S3), loses it when the wrap is removed; bad input; wraps a backup host forged.

Through the real ``ops`` CLI; the second admin runs with a config of their own that names
only their identity (no writer key), as an admin host would.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from tests.fixtures.backup_env import BackupEnv, Result
from tests.fixtures.paths import OPS_PY
from tests.hostile.forge import snapshot_key
from tests.hostile.genuine import an_hour_ago, assert_no_internal_error

pytestmark = pytest.mark.integration


def backed_up(env: BackupEnv, tmp_path: Path) -> Path:
    src = tmp_path / "www"
    src.mkdir()
    (src / "index.html").write_text("<h1>Ủy ban nhân dân tỉnh</h1>\n", encoding="utf-8")
    (src / "data.bin").write_bytes(bytes(range(256)) * 4096)
    env.add_source("webroot", src)
    env.ops("backup", "run", check=True)
    return src


def second_admin(env: BackupEnv, identity: Path) -> Path:
    """A config like the env's, holding only ``identity``."""
    doc = yaml.safe_load(env.config.read_text(encoding="utf-8"))
    del doc["backup"]["writer_key"]
    doc["backup"]["identity"] = str(identity)
    doc["state_dir"] = str(identity.parent / "admin-state")
    path = identity.parent / "admin.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def as_admin(env: BackupEnv, config: Path, *args: str, **extra: str) -> Result:
    """``ops --config CONFIG ARGS`` in a process of its own (restores start worker pools)."""
    done = subprocess.run(
        [sys.executable, str(OPS_PY), "--config", str(config), *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, **env.env, **extra}, check=False,
    )  # fmt: skip
    assert_no_internal_error(done.stdout + done.stderr)
    return Result(done.returncode, done.stdout, done.stderr)


def key_json(env: BackupEnv, *args: str) -> tuple[int, Any]:
    result = env.ops("--json", "backup", "key", *args)
    assert_no_internal_error(result.stdout + result.stderr)
    return result.code, json.loads(result.stdout) if result.stdout else None


def test_another_key_reads_everything_through_a_wrap_until_it_is_removed(
    backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = backup_env
    src = backed_up(env, tmp_path)
    second = tmp_path / "admin" / "second.txt"

    code, added = key_json(env, "add", "--new-identity", str(second))

    assert code == 0, added
    assert stat.S_IMODE(second.stat().st_mode) == 0o600
    [repo] = added["repositories"]
    assert (repo["how"], repo["written"]) == ("wrap", True)
    recipient = added["recipient"]
    assert recipient == str(pyrage.x25519.Identity.from_str(
        next(line for line in second.read_text().splitlines() if line.startswith("AGE-SECRET"))
    ).to_public())  # fmt: skip
    config = second_admin(env, second)
    target = tmp_path / "restored"
    # With pack workers (as a restore of any size starts them): they hold the wrapped keys too.
    restored = as_admin(env, config, "backup", "restore", "latest", "--source", "webroot",
                        "--target", str(target), PORTALOPS_PACK_WORKERS="always")  # fmt: skip
    assert restored.code == 0, restored.stderr
    restored_file = target / src.relative_to("/") / "data.bin"
    assert restored_file.read_bytes() == (src / "data.bin").read_bytes()

    code, holders = key_json(env, "list")
    assert code == 0
    assert [(h["how"], len(h["objects"])) for h in holders] == [("recipient", 0), ("wrap", 1)]
    assert holders[1]["recipient"] == recipient
    code, again = key_json(env, "add", "--recipient", recipient)  # always a new wrap
    assert (code, again["repositories"][0]["written"]) == (0, True)
    assert len(env.object_keys(f"identities/{recipient}")) == 2

    # A new night's backup: the second key reads it too (nothing was re-encrypted for it).
    (src / "index.html").write_text("<h1>mới</h1>\n", encoding="utf-8")
    env.ops("backup", "run", check=True)
    listed = as_admin(env, config, "--json", "backup", "list")
    assert [s["files"] for s in json.loads(listed.stdout)] == [2, 2]

    code, removed = key_json(env, "remove", "--recipient", recipient)
    assert code == 0, removed
    assert len(removed["repositories"][0]["deleted"]) == 2
    assert env.object_keys("identities") == []
    shut_out = as_admin(env, config, "backup", "restore", "latest", "--source", "webroot",
                        "--target", str(tmp_path / "again"))  # fmt: skip
    assert shut_out.code == 3, shut_out.stdout + shut_out.stderr
    assert "identity" in shut_out.stderr


def test_key_commands_refuse_bad_input_with_the_reason(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    backed_up(env, tmp_path)
    own = json.loads(env.writer_key.read_text())["recipients"][0]
    stranger = str(pyrage.x25519.Identity.generate().to_public())
    secret = str(pyrage.x25519.Identity.generate())  # given by mistake: never echoed

    cases = [
        (["add", "--recipient", "age1notakey"], 2, "is not an age public key"),
        (["add", "--recipient", stranger.upper()], 2, "write the key in lower case"),
        (["add", "--recipient", "ssh-ed25519 AAAA"], 2, "is not an age public key"),
        (["remove", "--recipient", own], 2, "this host's own identity"),
        (["remove", "--recipient", stranger], 2, "has no wrap in main"),
        (["add", "--recipient", secret], 2, "that is a secret key"),
        (["add", "--new-identity", str(env.identity)], 2, "already exists"),
        (["add"], 2, "one of the arguments --recipient --new-identity is required"),
        (["add", "--recipient", stranger, "--repository", "nowhere"], 2, "unknown repository"),
    ]
    for args, code, said in cases:
        result = env.ops("backup", "key", *args)
        assert_no_internal_error(result.stdout + result.stderr)
        assert secret not in result.stdout + result.stderr
        assert (result.code, said in result.stderr) == (code, True), (args, result.stderr)
    assert env.object_keys("identities") == []

    env.write_config(identity=False)  # a backup host: the writer key only
    refused = env.ops("backup", "key", "add", "--recipient", stranger)
    assert refused.code == 3
    assert "backup.identity" in refused.stderr
    listed = env.ops("--json", "backup", "key", "list")  # listing needs no identity
    assert listed.code == 0
    assert [h["recipient"] for h in json.loads(listed.stdout)] == [own]


def test_wraps_a_backup_host_forges_do_not_stop_or_fool_the_reader(
    backup_env: BackupEnv, tmp_path: Path
) -> None:
    """With write access a backup host adds, under the admin's own identities/ prefix, a
    wrap that is garbage, one too large to be one, and a genuine-looking wrap handing over a
    key of its own. The admin still restores, and is told what was passed over."""
    env = backup_env
    src = backed_up(env, tmp_path)
    admin = pyrage.x25519.Identity.from_str(
        next(line for line in env.identity.read_text().splitlines() if line.startswith("AGE-"))
    )
    prefix = f"identities/{admin.to_public()}"
    env.write_object(f"{prefix}/{'1' * 64}", b"not an age file")
    env.write_object(f"{prefix}/{'2' * 64}", os.urandom(64 * 1024))
    planted = pyrage.x25519.Identity.generate()
    doc = {"kind": "portal-ops repository identities", "version": 1, "identities": [str(planted)]}
    env.write_object(
        f"{prefix}/{'3' * 64}", pyrage.encrypt(json.dumps(doc).encode(), [admin.to_public()])
    )

    target = tmp_path / "restored"
    done = env.ops("backup", "restore", "latest", "--source", "webroot", "--target", str(target))

    assert done.code == 0, done.stderr
    restored_file = target / src.relative_to("/") / "data.bin"
    assert restored_file.read_bytes() == (src / "data.bin").read_bytes()
    assert f"{prefix}/{'1' * 64} not used" in done.stderr
    assert "larger than a wrap" in done.stderr
    code, holders = key_json(env, "list")
    assert code == 0
    # under the admin's own key, listed as what they are: objects found there, not keys
    assert [(h["how"], len(h["objects"])) for h in holders] == [("recipient", 3)]


def test_an_admin_host_never_encrypts_to_a_key_a_backup_host_wrote_into_the_config(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A backup host (writer key, write access) adds its own age key to the repository's
    config. The admin host, holding only the identity, then prunes: the repack of old
    backups must not be encrypted to that key (the host would read them), nor may a copy.
    Reading goes on; with the genuine config the same prune repacks."""
    env = local_backup_env
    src = tmp_path / "www"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "small.txt").write_text("giữ lại\n", encoding="utf-8")
    env.add_source("webroot", src)
    env.ops("backup", "run", check=True)
    (src / "big.bin").unlink()  # its pack is now mostly unused: a prune repacks small.txt
    env.ops("backup", "run", check=True)
    env.retention = {"last": 1, "daily": 0, "weekly": 0, "monthly": 0, "yearly": 0}
    env.more_repositories.append({"name": "second", "url": str(tmp_path / "second")})
    env.write_config()
    env.ops("backup", "init", "--repository", "second", check=True)
    admin = second_admin(env, env.identity)
    attacker = pyrage.x25519.Identity.generate()
    genuine = env.read_object("config")
    doc = json.loads(genuine)
    doc["recipients"].append(str(attacker.to_public()))
    env.write_object("config", json.dumps(doc).encode())
    packs = set(env.object_keys("packs"))

    pruned = as_admin(env, admin, "backup", "forget", "--prune", "--repository", "main")
    assert pruned.code == 3, pruned.stdout + pruned.stderr
    assert str(attacker.to_public()) in pruned.stderr
    assert "is not this host's identity" in pruned.stderr
    assert set(env.object_keys("packs")) == packs  # nothing written, nothing deleted
    target = tmp_path / "restored"
    read = as_admin(env, admin, "backup", "restore", "latest", "--source", "webroot",
                    "--repository", "main", "--target", str(target))  # fmt: skip
    assert read.code == 0, read.stderr

    # The other way round: the target of a copy says the same.
    second_config = tmp_path / "second" / "config"
    second_doc = json.loads(second_config.read_bytes())
    second_doc["recipients"].append(str(attacker.to_public()))
    second_config.write_text(json.dumps(second_doc))
    copied = as_admin(env, admin, "--json", "backup", "copy", "--from", "main", "--to", "second")
    assert copied.code == 3, copied.stdout + copied.stderr
    assert all(s["status"] == "failed" for s in json.loads(copied.stdout)["snapshots"])
    assert not list((tmp_path / "second" / "packs").rglob("*"))

    env.write_object("config", genuine)
    pruned = as_admin(env, admin, "--json", "backup", "forget", "--prune", "--repository", "main")
    assert pruned.code == 0, pruned.stdout + pruned.stderr
    assert json.loads(pruned.stdout)[0]["prune"]["packs_repacked"] >= 1
    for key in set(env.object_keys("packs")) - packs:
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(env.read_object(key), [attacker])


def test_rotation_closes_new_backups_to_the_old_identity_and_refuses_the_old_writer_key(
    backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = backup_env
    src = backed_up(env, tmp_path)
    old_writer = json.loads(env.writer_key.read_text())
    old_identity = tmp_path / "old" / "identity.txt"
    old_identity.parent.mkdir()
    old_identity.write_bytes(env.identity.read_bytes())
    old_identity.chmod(0o600)
    new_identity, new_writer = tmp_path / "rot" / "identity.txt", tmp_path / "rot" / "writer.key"

    code, rotated = key_json(env, "rotate", "--new-identity", str(new_identity),
                             "--writer-key", str(new_writer))  # fmt: skip

    assert code == 0, rotated
    assert rotated["resumed"] is False
    for path in (new_identity, new_writer):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    writer = json.loads(new_writer.read_text())
    assert (writer["id_key"], writer["chunker_seed"]) == (
        old_writer["id_key"],
        old_writer["chunker_seed"],
    )
    assert writer["recipients"] == [rotated["recipient"]] != old_writer["recipients"]

    # A backup host left on the old writer key is refused before it reads or writes anything.
    stored = set(env.object_keys("packs")) | set(env.object_keys("snapshots"))
    (src / "index.html").write_text("<h1>sau khi đổi khóa</h1>\n", encoding="utf-8")
    stale = env.ops("--json", "backup", "run")
    assert stale.code == 3, stale.stdout + stale.stderr
    [result] = json.loads(stale.stdout)["results"]
    assert "retired" in result["error"]
    assert set(env.object_keys("packs")) | set(env.object_keys("snapshots")) == stored

    # The host gets the new writer key, the admin the new identity: nothing is re-uploaded.
    env.writer_key.write_bytes(new_writer.read_bytes())
    env.identity.write_bytes(new_identity.read_bytes())
    [result] = env.ops_json("backup", "run")["results"]
    assert result["status"] == "ok"
    assert result["bytes_added"] < 64 * 1024  # blobs still deduplicate: same id-key
    snapshots = env.ops_json("backup", "list")
    assert [s["unreadable"] for s in snapshots] == [None, None]  # the new identity reads both

    old = second_admin(env, old_identity)  # the leaver's copy of the old identity
    listed = as_admin(env, old, "--json", "backup", "list")
    readable = [s["unreadable"] is None for s in json.loads(listed.stdout)]
    assert readable == [True, False]  # what was written before, not what came after
    target = tmp_path / "restored"
    done = env.ops("backup", "restore", "latest", "--source", "webroot", "--target", str(target))
    assert done.code == 0, done.stderr
    restored = (target / src.relative_to("/") / "index.html").read_text(encoding="utf-8")
    assert restored == "<h1>sau khi đổi khóa</h1>\n"

    # Run again with the same two files: it finishes, writes nothing new, breaks nothing.
    again = env.ops("--json", "backup", "key", "rotate", "--new-identity", str(new_identity),
                    "--writer-key", str(new_writer))  # fmt: skip
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["resumed"] is True
    assert env.ops_json("backup", "run")["results"][0]["status"] == "ok"


def test_key_add_hands_out_only_the_identity_file_never_a_planted_key(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A backup host plants a wrap for the admin holding a key of its own, junk under the
    next holder's name, and a snapshot whose header has hundreds of stanzas. The next
    holder's wrap holds the admin's identity alone, is written despite the junk, and the
    stanza flood is refused at once instead of tried against every key held."""
    env = local_backup_env
    src = backed_up(env, tmp_path)
    admin = pyrage.x25519.Identity.from_str(
        next(line for line in env.identity.read_text().splitlines() if line.startswith("AGE-"))
    )
    planted = pyrage.x25519.Identity.generate()
    doc = {"kind": "portal-ops repository identities", "version": 1, "identities": [str(planted)]}
    env.write_object(f"identities/{admin.to_public()}/{'4' * 64}",
                     pyrage.encrypt(json.dumps(doc).encode(), [admin.to_public()]))  # fmt: skip
    second = pyrage.x25519.Identity.generate()
    env.write_object(f"identities/{second.to_public()}/{'0' * 64}", b"junk")
    many = [pyrage.x25519.Identity.generate().to_public() for _ in range(300)]
    flood = pyrage.encrypt(b"{}", [*many, admin.to_public()])
    env.write_object(snapshot_key("flood", an_hour_ago(), flood), flood)

    code, added = key_json(env, "add", "--recipient", str(second.to_public()))

    assert code == 0, added
    prefix = f"identities/{second.to_public()}"
    [wrap] = [k for k in env.object_keys(prefix) if "0" * 64 not in k]
    held = json.loads(pyrage.decrypt(env.read_object(f"{prefix}/{wrap.split('/')[-1]}"), [second]))
    assert held["identities"] == [str(admin)]  # not the planted key
    listed = env.ops("--json", "backup", "list")
    [flooded] = [s for s in json.loads(listed.stdout) if s["source"] == "flood"]
    assert "recipient stanzas, more than the 16 accepted" in flooded["unreadable"]
    assert src.exists()


def test_key_remove_goes_through_every_repository_and_a_rewritten_config_does_not_stop_it(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    backed_up(env, tmp_path)
    env.more_repositories.append({"name": "second", "url": str(tmp_path / "second")})
    env.write_config()
    env.ops("backup", "init", "--repository", "second", check=True)
    holder = str(pyrage.x25519.Identity.generate().to_public())
    code, _ = key_json(env, "add", "--recipient", holder, "--repository", "second")
    assert code == 0
    other = str(pyrage.x25519.Identity.generate().to_public())
    code, _ = key_json(env, "add", "--recipient", other)  # both repositories
    # A backup host names the holder in main's config, as if it were the repository's key.
    doc = json.loads(env.read_object("config"))
    doc["recipients"] += [holder, other]
    env.write_object("config", json.dumps(doc).encode())

    code, removed = key_json(env, "remove", "--recipient", holder)

    assert code == 0, removed
    assert [(r["repository"], len(r["deleted"])) for r in removed["repositories"]] == [
        ("main", 0), ("second", 1),
    ]  # fmt: skip
    code, removed = key_json(env, "remove", "--recipient", other)
    assert code == 0, removed
    assert [len(r["deleted"]) for r in removed["repositories"]] == [1, 1]
    assert env.object_keys("identities") == []
    assert not [p for p in (tmp_path / "second" / "identities").rglob("*") if p.is_file()]
