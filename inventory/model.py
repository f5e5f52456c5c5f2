"""Load and validate ``inventory/units.yaml`` into the estate: units, portals and domains.

Schema errors come from pydantic (with the line of the key); the rules that span units
(label derivation, collisions, legacy targets, levels) are checked here, every problem is
collected, and all of them are reported together as FILE:LINE: key: what.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from portalops.core.errors import SourceError
from portalops.core.validate import Strict, parse_model
from portalops.core.yamlsrc import Loc, YamlSource, dotted, load_yaml
from portalops.inventory.labels import LabelError, check_fqdn, check_label, derive_label

Name = Annotated[str, Field(min_length=1)]


class UnitKind(StrEnum):
    PROVINCE = "province"
    DEPARTMENT = "department"
    DISTRICT = "district"
    COMMUNE = "commune"


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


class _Named(Strict):
    name: Name
    slug: str | None = None

    @field_validator("name")
    @classmethod
    def _name_nfc(cls, value: str) -> str:
        return _nfc(value)


class CommuneSpec(_Named):
    pass


class DepartmentSpec(_Named):
    slug: str  # Art. 3.4a: the agency's abbreviation; it cannot be derived from the name


class DistrictSpec(_Named):
    communes: list[CommuneSpec] = []


class ProvinceSpec(Strict):
    name: Name
    zone: Name
    english: str | None = "english"

    @field_validator("name")
    @classmethod
    def _name_nfc(cls, value: str) -> str:
        return _nfc(value)

    @field_validator("zone")
    @classmethod
    def _zone_lower(cls, value: str) -> str:
        return value.strip().rstrip(".").lower()


class LegacySpec(Strict):
    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to")
    @classmethod
    def _fqdn_lower(cls, value: str) -> str:
        return value.strip().rstrip(".").lower()


class UnitsFile(Strict):
    province: ProvinceSpec
    levels: Literal[2, 3] = 3
    departments: list[DepartmentSpec] = []
    districts: list[DistrictSpec] = []
    communes: list[CommuneSpec] = []
    legacy: list[LegacySpec] = []


@dataclass(frozen=True)
class Portal:
    """One administrative unit's portal and every domain it answers on."""

    unit: str
    kind: UnitKind
    parent: str | None
    domains: tuple[str, ...]  # primary first; then the English channel (province)
    legacy: tuple[str, ...] = ()  # old names that must redirect here
    line: int = 0

    @property
    def domain(self) -> str:
        return self.domains[0]

    @property
    def all_domains(self) -> tuple[str, ...]:
        return self.domains + self.legacy


@dataclass(frozen=True)
class Estate:
    """Every portal of a province, validated."""

    path: Path
    province: str
    zone: str
    levels: int
    portals: tuple[Portal, ...]
    redirects: dict[str, str] = field(default_factory=dict)  # legacy name -> new name

    def counts(self) -> dict[str, int]:
        out = {kind.value: 0 for kind in UnitKind}
        for portal in self.portals:
            out[portal.kind.value] += 1
        return out

    def by_domain(self, domain: str) -> Portal | None:
        domain = domain.lower().rstrip(".")
        for portal in self.portals:
            if domain in portal.all_domains:
                return portal
        return None


def load_estate(path: Path) -> Estate:
    """Read, validate and derive the estate; raises SourceError listing every problem."""
    source = load_yaml(path)
    spec = parse_model(UnitsFile, source)
    return _Builder(source, spec).build()


@dataclass
class _Builder:
    source: YamlSource
    spec: UnitsFile
    problems: list[str] = field(default_factory=list)
    # fqdn -> (unit name, loc) of the first unit that derived it
    owners: dict[str, tuple[str, Loc]] = field(default_factory=dict)

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(f"{self.source.where(loc)}: {dotted(loc)}: {message}")

    def build(self) -> Estate:
        spec = self.spec
        zone = spec.province.zone
        try:
            check_fqdn(zone, "zone")
        except LabelError as exc:
            self.problem(("province", "zone"), str(exc))
            raise SourceError(self.problems) from None
        portals = self._portals(zone)
        redirects = self._legacy(portals)
        if self.problems:
            raise SourceError(self.problems)
        return Estate(
            path=self.source.path,
            province=spec.province.name,
            zone=zone,
            levels=spec.levels,
            portals=tuple(portals),
            redirects=redirects,
        )

    def _portals(self, zone: str) -> list[Portal]:
        spec = self.spec
        province = spec.province.name
        domains = [f"www.{zone}"]
        if spec.province.english:
            domains.append(f"{spec.province.english.lower()}.{zone}")
        portals = self._add([], ("province",), province, UnitKind.PROVINCE, None, domains)
        for i, dept in enumerate(spec.departments):
            self._unit(portals, ("departments", i), dept, UnitKind.DEPARTMENT, province, zone)
        if spec.levels == 3:
            if spec.communes:
                self.problem(
                    ("communes",),
                    "communes directly under the province need 'levels: 2'; "
                    "under 'levels: 3' list them under their district",
                )
            for i, district in enumerate(spec.districts):
                loc: Loc = ("districts", i)
                dzone = self._unit(portals, loc, district, UnitKind.DISTRICT, province, zone)
                if dzone is None:
                    continue
                for j, commune in enumerate(district.communes):
                    cloc: Loc = (*loc, "communes", j)
                    self._unit(portals, cloc, commune, UnitKind.COMMUNE, district.name, dzone)
        else:
            if spec.districts:
                self.problem(
                    ("districts",),
                    "districts are abolished under 'levels: 2' (province / commune); "
                    "list communes at the top level, or set 'levels: 3'",
                )
            for j, commune in enumerate(spec.communes):
                self._unit(portals, ("communes", j), commune, UnitKind.COMMUNE, province, zone)
        return portals

    def _unit(
        self,
        portals: list[Portal],
        loc: Loc,
        unit: _Named,
        kind: UnitKind,
        parent: str,
        suffix: str,
    ) -> str | None:
        """Add ``unit`` as ``<label>.<suffix>``; return that domain, or None on a problem."""
        label = self._label(loc, unit.name, unit.slug)
        if label is None:
            return None
        fqdn = f"{label}.{suffix}"
        before = len(portals)
        self._add(portals, loc, unit.name, kind, parent, [fqdn])
        return fqdn if len(portals) > before else None

    def _label(self, loc: Loc, name: str, slug: str | None) -> str | None:
        if slug is not None:
            try:
                check_label(slug, what=f"slug '{slug}'")
            except LabelError as exc:
                self.problem((*loc, "slug"), str(exc))
                return None
            return slug
        try:
            return derive_label(name)
        except LabelError as exc:
            self.problem((*loc, "name"), str(exc))
            return None

    def _add(
        self,
        portals: list[Portal],
        loc: Loc,
        name: str,
        kind: UnitKind,
        parent: str | None,
        domains: list[str],
    ) -> list[Portal]:
        ok = True
        for fqdn in domains:
            try:
                check_fqdn(fqdn, "domain")
            except LabelError as exc:
                self.problem(loc, f"{name}: {exc}")
                ok = False
                continue
            if fqdn in self.owners:
                other, other_loc = self.owners[fqdn]
                self.problem(
                    loc,
                    f"'{name}' and '{other}' ({self.source.where(other_loc)}) both derive "
                    f"{fqdn}; give one of them a 'slug'",
                )
                ok = False
            else:
                self.owners[fqdn] = (name, loc)
        if ok:
            portals.append(Portal(name, kind, parent, tuple(domains), line=self.source.line(loc)))
        return portals

    def _legacy(self, portals: list[Portal]) -> dict[str, str]:
        redirects: dict[str, str] = {}
        for i, entry in enumerate(self.spec.legacy):
            loc: Loc = ("legacy", i)
            try:
                check_fqdn(entry.from_, "legacy name")
            except LabelError as exc:
                self.problem((*loc, "from"), str(exc))
                continue
            if entry.to not in self.owners:
                self.problem(
                    (*loc, "to"),
                    f"'{entry.to}' is not a domain of any unit in this file; "
                    "'ops inventory domains' lists them",
                )
                continue
            if entry.from_ in self.owners:
                owner, _ = self.owners[entry.from_]
                self.problem((*loc, "from"), f"'{entry.from_}' is the live domain of '{owner}'")
                continue
            if entry.from_ in redirects:
                self.problem((*loc, "from"), f"'{entry.from_}' is listed twice")
                continue
            redirects[entry.from_] = entry.to
        for index, portal in enumerate(portals):
            old = tuple(src for src, dst in redirects.items() if dst in portal.domains)
            if old:
                portals[index] = Portal(
                    portal.unit, portal.kind, portal.parent, portal.domains, old, portal.line
                )
        return redirects
