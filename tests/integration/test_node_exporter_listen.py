"""Where the node_exporter role makes the exporter listen, rendered by real ansible-playbook.

On a server's routable address the exporter relies on the common role's firewall; where the
inventory turns that firewall off (``common_nftables_enabled: false``) or the site says the
host is not firewalled, it stays on loopback. The role's defaults and its flags template are
rendered into a temporary file (no package, no service).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.local_play import local_play
from tests.fixtures.paths import PROJECT

ROLE = PROJECT / "playbooks" / "roles" / "node_exporter"

PLAY = """\
- name: Render node_exporter's flags
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {defaults}
  tasks:
    - name: The flags file
      ansible.builtin.template:
        src: {template}
        dest: {dest}
        mode: "0644"
"""


def render(tmp_path: Path, variables: dict[str, object]) -> str:
    """The ARGS line of /etc/default/prometheus-node-exporter for ``variables``."""
    dest = tmp_path / "flags"
    done = local_play(
        tmp_path,
        PLAY.format(
            defaults=ROLE / "defaults" / "main.yml",
            template=ROLE / "templates" / "default-node-exporter.j2",
            dest=dest,
        ),
        variables,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [args] = [
        line for line in dest.read_text(encoding="utf-8").splitlines() if line.startswith("ARGS=")
    ]
    return args


@pytest.mark.parametrize(
    ("variables", "listen"),
    [
        ({"portal_address": "10.0.0.5"}, "10.0.0.5:9100"),  # site.yml: common applied first
        ({"portal_address": "10.0.0.5", "common_nftables_enabled": True}, "10.0.0.5:9100"),
        ({"portal_address": "10.0.0.5", "common_nftables_enabled": False}, "127.0.0.1:9100"),
        ({"portal_address": "10.0.0.5", "node_exporter_firewalled": False}, "127.0.0.1:9100"),
        ({}, "127.0.0.1:9100"),  # a host outside the inventory
    ],
)
def test_listen_address(tmp_path: Path, variables: dict[str, object], listen: str) -> None:
    args = render(tmp_path, variables)
    assert args.count("--web.listen-address=") == 1
    assert f"--web.listen-address={listen}" in args
