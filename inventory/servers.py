"""Load and validate ``inventory/servers.yaml``: the machines, their roles and the portals each
serves, checked against the estate (``inventory/units.yaml``).

The file says which server runs what; everything the playbooks need per host is derived here
(sites with their slugs, the databases a host keeps, the DNS records of the zone) so that
adding a commune to the units file is enough to bring its domain up on the next run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from portalops.core.errors import SourceError
from portalops.core.validate import Strict, parse_model
from portalops.core.yamlsrc import Loc, YamlSource, dotted, load_yaml
from portalops.inventory.model import Estate, Portal, UnitKind

#: PostgreSQL truncates identifiers at 63 bytes (NAMEDATALEN - 1); MariaDB allows 64 for a
#: database and 80 for a user, so the stricter bound serves both engines.
MAX_DB_IDENTIFIER = 63
DB_PREFIX = "portal_"
SERVERS_FILE = "servers.yaml"
# The --servers option's help, for every command that reads the servers file.
SERVERS_HELP = "the servers file (default: servers.yaml beside the units file)"

_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62})$")


class ServerRole(StrEnum):
    """What a server does; each role is an Ansible group of the same name."""

    WEB = "web"
    DATABASE = "database"
    DNS = "dns"
    MONITORING = "monitoring"
    AGENT = "agent"


class Engine(StrEnum):
    POSTGRESQL = "postgresql"
    MARIADB = "mariadb"
    NONE = "none"


class ServerSpec(Strict):
    name: Annotated[str, Field(min_length=1)]
    address: IPv4Address
    ipv6: IPv6Address | None = None
    ssh_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    roles: Annotated[list[ServerRole], Field(min_length=1)]
    portals: list[str] | None = None
    database: Engine = Engine.NONE

    @field_validator("name")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError(
                f"'{value}' is not an inventory hostname: lowercase letters, digits, '.', '-', "
                "'_', starting with a letter or digit"
            )
        return value

    @field_validator("portals")
    @classmethod
    def _lower(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [v.strip().rstrip(".").lower() for v in value]


class ServersFile(Strict):
    servers: list[ServerSpec] = []


@dataclass(frozen=True)
class Site:
    """One portal as a web server serves it."""

    portal: Portal
    slug: str
    database: Engine

    @property
    def domain(self) -> str:
        return self.portal.domain


@dataclass(frozen=True)
class Server:
    """One machine of the estate, with what it serves derived from the units file."""

    name: str
    address: IPv4Address
    ipv6: IPv6Address | None
    ssh_port: int | None
    roles: tuple[ServerRole, ...]
    database: Engine
    sites: tuple[Site, ...] = ()  # web role: the portals it serves, in estate order
    databases: tuple[Site, ...] = ()  # database role: the sites whose database lives here

    def has(self, role: ServerRole) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class Servers:
    """Every server, validated against the estate."""

    path: Path
    estate: Estate
    servers: tuple[Server, ...]

    def by_name(self, name: str) -> Server | None:
        return next((s for s in self.servers if s.name == name), None)

    def with_role(self, role: ServerRole) -> list[Server]:
        return [s for s in self.servers if s.has(role)]

    def web_host_of(self, domain: str) -> Server | None:
        """The web server serving the portal that answers on ``domain``."""
        for server in self.with_role(ServerRole.WEB):
            for site in server.sites:
                if domain in site.portal.all_domains:
                    return server
        return None

    def unserved(self, estate: Estate) -> list[str]:
        """The estate's portals (by primary domain) that no web server serves yet."""
        return [p.domain for p in estate.portals if self.web_host_of(p.domain) is None]

    def monitoring_addresses(self) -> list[str]:
        """Where scrapes come from: every monitoring server's addresses."""
        out: list[str] = []
        for server in self.with_role(ServerRole.MONITORING):
            out.append(str(server.address))
            if server.ipv6 is not None:
                out.append(str(server.ipv6))
        return out


def default_servers_path(units_path: Path) -> Path:
    """``servers.yaml`` beside the units file."""
    return units_path.parent / SERVERS_FILE


def site_slug(estate: Estate, portal: Portal) -> str:
    """``soyte``, ``daotru_tamdao``: the primary domain without the zone, as an identifier
    (dots and hyphens become ``_``) for database, role and file names."""
    domain = portal.domain
    suffix = "." + estate.zone
    relative = domain[: -len(suffix)] if domain.endswith(suffix) else domain
    return re.sub(r"[.-]", "_", relative.lower())


def servers_for(estate: Estate, given: Path | None = None) -> Servers:
    """The servers file ``given``, else the one beside the units file, validated against the
    estate."""
    return load_servers(given if given is not None else default_servers_path(estate.path), estate)


def load_servers(path: Path, estate: Estate) -> Servers:
    """Read and validate the servers file against ``estate``; raises SourceError listing every
    problem."""
    source = load_yaml(path)
    if source.data is None:
        raise SourceError([f"{path}:1: servers: required key is missing"])
    spec = parse_model(ServersFile, source)
    return _Builder(source, spec, estate).build()


@dataclass
class _Builder:
    source: YamlSource
    spec: ServersFile
    estate: Estate
    problems: list[str] = field(default_factory=list)

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(f"{self.source.where(loc)}: {dotted(loc)}: {message}")

    def build(self) -> Servers:
        self._unique_names()
        slugs = self._slugs()
        served = self._assign_sites(slugs)
        database_host = self._database_host()
        kept: dict[str, list[Site]] = {}
        servers: list[Server] = []
        for i, spec in enumerate(self.spec.servers):
            sites = tuple(served.get(i, ()))
            if sites and spec.database is not Engine.NONE:
                keeper = spec.name if ServerRole.DATABASE in spec.roles else database_host
                if keeper is None:
                    self.problem(
                        ("servers", i, "database"),
                        f"'{spec.name}' wants {spec.database.value} databases but no server has "
                        "the 'database' role",
                    )
                else:
                    kept.setdefault(keeper, []).extend(sites)
            servers.append(
                Server(
                    name=spec.name,
                    address=spec.address,
                    ipv6=spec.ipv6,
                    ssh_port=spec.ssh_port,
                    roles=tuple(dict.fromkeys(spec.roles)),
                    database=spec.database,
                    sites=sites,
                )
            )
        servers = [replace(s, databases=tuple(kept.get(s.name, ()))) for s in servers]
        if self.problems:
            raise SourceError(self.problems)
        return Servers(self.source.path, self.estate, tuple(servers))

    def _unique_names(self) -> None:
        """Names, addresses and IPv6 addresses are each one server's: a copied address would
        make two scrape targets of one machine and leave the other unwatched."""
        for key in ("name", "address", "ipv6"):
            seen: dict[str, int] = {}
            for i, spec in enumerate(self.spec.servers):
                value = getattr(spec, key)
                if value is None:
                    continue
                text = str(value)
                if text in seen:
                    first = self.source.line(("servers", seen[text], key))
                    owner = self.spec.servers[seen[text]].name
                    whose = "defined" if key == "name" else f"the {key} of '{owner}'"
                    self.problem(
                        ("servers", i, key), f"'{text}' is already {whose} on line {first}"
                    )
                else:
                    seen[text] = i

    def _slugs(self) -> dict[str, str]:
        """Primary domain -> slug; two portals whose slugs collide cannot both get a database."""
        slugs: dict[str, str] = {}
        owner: dict[str, str] = {}
        for portal in self.estate.portals:
            slug = site_slug(self.estate, portal)
            if slug in owner:
                self.problems.append(
                    f"{self.estate.path}:{portal.line}: {portal.unit}: {portal.domain} and "
                    f"{owner[slug]} both make the identifier '{slug}'; give one unit a 'slug'"
                )
            owner[slug] = portal.domain
            slugs[portal.domain] = slug
        return slugs

    def _select(self, i: int, spec: ServerSpec) -> list[Portal]:
        """The portals a web server's ``portals:`` list picks, in estate order."""
        if spec.portals is None:
            return list(self.estate.portals)
        kinds = {k.value for k in UnitKind}
        chosen: set[str] = set()
        for j, item in enumerate(spec.portals):
            if item in kinds:
                chosen.update(p.domain for p in self.estate.portals if p.kind.value == item)
                continue
            portal = self.estate.by_domain(item)
            if portal is None:
                self.problem(
                    ("servers", i, "portals", j),
                    f"'{item}' is neither a unit kind ({', '.join(sorted(kinds))}) nor a domain "
                    f"of {self.estate.path}; 'ops inventory domains' lists them",
                )
                continue
            chosen.add(portal.domain)
        return [p for p in self.estate.portals if p.domain in chosen]

    def _assign_sites(self, slugs: dict[str, str]) -> dict[int, list[Site]]:
        served: dict[int, list[Site]] = {}
        first_server: dict[str, int] = {}
        for i, spec in enumerate(self.spec.servers):
            if ServerRole.WEB not in spec.roles:
                if spec.portals is not None:
                    self.problem(
                        ("servers", i, "portals"),
                        f"'{spec.name}' has no 'web' role, so it serves no portals; "
                        "add the role or remove the list",
                    )
                continue
            for portal in self._select(i, spec):
                other = first_server.get(portal.domain)
                if other is not None:
                    self.problem(
                        ("servers", i, "portals"),
                        f"{portal.domain} is already served by "
                        f"'{self.spec.servers[other].name}' "
                        f"(line {self.source.line(('servers', other))}); a portal lives on one "
                        "web server",
                    )
                    continue
                first_server[portal.domain] = i
                slug = slugs[portal.domain]
                if spec.database is not Engine.NONE and len(DB_PREFIX + slug) > MAX_DB_IDENTIFIER:
                    self.problem(
                        ("servers", i, "database"),
                        f"{portal.domain}: database name '{DB_PREFIX}{slug}' is longer than "
                        f"{MAX_DB_IDENTIFIER} characters; give the unit a shorter 'slug'",
                    )
                served.setdefault(i, []).append(Site(portal, slug, spec.database))
        return served

    def _database_host(self) -> str | None:
        """Where the databases of web servers without the database role go: the first
        database server."""
        for spec in self.spec.servers:
            if ServerRole.DATABASE in spec.roles:
                return spec.name
        return None
