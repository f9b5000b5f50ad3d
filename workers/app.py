"""The Celery app of a jobsys worker, for ``celery -A workers.app worker``.

``jobsys worker`` does the same with friendlier flags. Settings come from the environment
(``JOBSYS_*``) once, here at the edge of the process, which also makes every file it writes
private to its user (umask 077; see ``jobsys.base.private``).
"""

from __future__ import annotations

from jobsys.base import config, private
from jobsys.declare import catalog
from jobsys.engine import broker

private.restrict_umask()  # before anything is written: files under JOBSYS_HOME are private
settings = config.Settings.from_env()
registry = catalog.load_registry(settings.catalog)
runtime = broker.Runtime(settings, registry)
app = broker.make_celery(settings, registry, runtime)
reaper = broker.install_worker_hooks(app, runtime)
