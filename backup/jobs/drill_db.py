"""Database drills: what the drill job needs to know of them.

A database source's kind gives its drill (``drill(source, drill_config)`` in
:mod:`portalops.backup.sources.postgres` and ``.mariadb``); the engine does the work
(:mod:`portalops.backup.engines.drills` for the comparison with the record and the smoke
queries, each engine module for loading into its throwaway server). The job only has to know
which errors a database step may meet: those fail the drill with a reason, anything else is a
bug and surfaces.
"""

from __future__ import annotations

from portalops.backup.engines import ENGINES, engine

DB_ERRORS: tuple[type[Exception], ...] = tuple(
    error for name in ENGINES for error in engine(name).errors()
)
