"""Clusters in the tests.

- ``processes``: a cluster made of processes on this host, sharing loopback (``Cluster``,
  ``cluster``, ``Database``); what most integration tests use, re-exported here.
- ``netns``, ``services``, ``hosts``: several hosts on one machine, each worker node and each
  beat in a network namespace of its own on a bridge, with a private Redis and a cuttable path
  to PostgreSQL; the fault scenarios of ``test_*.py`` in this package run on it.
"""

from tests.cluster.processes import (
    CATALOG,
    FAST_TIMERS,
    ROOT,
    Cluster,
    Database,
    cluster,
    with_db,
)

__all__ = ["CATALOG", "FAST_TIMERS", "ROOT", "Cluster", "Database", "cluster", "with_db"]
