"""The jobs one process knows: the ``Registry`` a process builds once from its catalog modules
(``catalog.load_registry``) and passes down, joined by the jobs registered at runtime.

Declaring a job (``JobSpec``, ``@job``, ``Job``, ``RetryPolicy``) is in ``jobsys.declare.spec``;
its names are importable from here too. Declaring registers nothing globally.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from jobsys.base import errors, keywords
from jobsys.declare.spec import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from jobsys.declare.spec import NAME_RE as NAME_RE
from jobsys.declare.spec import Job as Job
from jobsys.declare.spec import JobSpec as JobSpec
from jobsys.declare.spec import RetryPolicy as RetryPolicy
from jobsys.declare.spec import holds_words as holds_words
from jobsys.declare.spec import job as job
from jobsys.declare.spec import make_spec as make_spec

if TYPE_CHECKING:
    from jobsys.declare.workflows import Workflow

log = logging.getLogger("jobsys.jobs")


class DefinitionSource(Protocol):
    """Where a ``Registry`` reads the jobs and workflows registered at runtime from: the
    store's ``jobsys.store.definition_store.Source``. Declared here, as what the registry
    needs of it, so declaring work depends on no store."""

    def same_store(self, other: DefinitionSource) -> bool:
        """Whether ``other`` reads the same store (attaching it again changes nothing)."""
        ...

    def revision(self) -> tuple[int, int]:
        """Changes whenever a definition is added, replaced or removed."""
        ...

    def by_tenant(self) -> dict[str, list[Any]]:
        """Every tenant's definition records."""
        ...

    def build(self, records: list[Any], registry: Registry) -> tuple[dict[str, JobSpec], list[Any]]:
        """The specs of one tenant's job definitions (``registry`` is that tenant's view), and
        its workflow definitions, left to build once every spec is known."""
        ...

    def build_workflow(self, definition: Any, registry: Registry) -> Workflow:
        """The workflow of a workflow definition left by ``build``, checked in ``registry``."""
        ...


class _Shared:
    """What every view of one registry shares: the catalog, and the runtime definitions of
    every tenant (re-read together when the store's revision changes)."""

    def __init__(self) -> None:
        self.specs: dict[str, JobSpec] = {}
        self.workflows: dict[str, Workflow] = {}
        self.source: DefinitionSource | None = None
        self.dynamic: dict[str, dict[str, JobSpec]] = {}
        """Per tenant, its jobs registered at runtime by name."""
        self.dynamic_workflows: dict[str, dict[str, Workflow]] = {}
        self.revision: tuple[int, int] | None = None
        self.checked = 0.0
        self.builder: int | None = None
        """The thread rebuilding the definitions now (its lookups see the catalog only)."""
        self.lock = threading.Lock()
        self.views: dict[str, Registry] = {}


class Registry:
    """The jobs one process knows, by name. Built once per process and passed down.

    The catalog's jobs and workflows are fixed and seen by every tenant; with a
    ``DefinitionSource`` attached (``jobsys.store.definition_store.Source``), the jobs and
    workflows registered at runtime join them, re-read when the store's revision changes (looked
    at most once a second, and whenever a name is not found). A runtime definition belongs to a
    tenant: only the view of that tenant (``scoped(tenant)``) resolves its name. The registry a
    process builds (``tenant`` ``None``) resolves the catalog only, so a name is never looked up
    in some tenant by default: whoever resolves a name given by a principal, a run, a schedule
    or a workflow run scopes the registry to that tenant first.
    """

    REFRESH_SECONDS = 1.0

    tenant: str | None
    """The tenant whose runtime definitions this view sees (``None``: the catalog only)."""

    def __init__(self, specs: Iterable[JobSpec] = ()) -> None:
        self._s = _Shared()
        self.tenant = None
        for spec in specs:
            self.add(spec)

    def scoped(self, tenant: str) -> Registry:
        """This registry as ``tenant`` sees it: the catalog, and that tenant's runtime jobs
        and workflows (never another tenant's)."""
        if tenant == self.tenant:
            return self
        view = self._s.views.get(tenant)
        if view is None:
            view = Registry.__new__(Registry)
            view._s, view.tenant = self._s, tenant
            self._s.views[tenant] = view
        return view

    def catalog(self) -> list[JobSpec]:
        """The jobs of the catalog (declared in code), by name."""
        return sorted(self._s.specs.values(), key=lambda s: s.name)

    def queues(self, tenant: str | None = None) -> set[str]:
        """The queues of every job known here: the catalog's and every tenant's runtime jobs
        (``tenant`` given: that tenant's runtime jobs only, as it may see them)."""
        if self._s.source is not None:
            self.refresh()
        found = {s.queue for s in self._s.specs.values()}
        for owner, specs in self._s.dynamic.items():
            if tenant is None or owner == tenant:
                found |= {s.queue for s in specs.values()}
        return found

    # --- runtime definitions -----------------------------------------------------------

    def attach(self, source: DefinitionSource) -> None:
        """Join the jobs registered at runtime in ``source``'s store to this registry."""
        current = self._s.source
        if current is not None and current.same_store(source):
            return
        self._s.source = source
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Re-read the runtime definitions if they changed (``force``: look now)."""
        shared = self._s
        source = shared.source
        if source is None or shared.builder == threading.get_ident():
            return  # (a lookup of the rebuild itself; another thread's waits for the lock)
        now = time.monotonic()
        if not force and now - shared.checked < self.REFRESH_SECONDS:
            return
        with shared.lock:
            shared.checked = now
            try:
                revision = source.revision()
            except Exception as exc:  # the store is down: keep what is known
                log.warning("jobsys: cannot read the job definitions: %s", exc)
                return
            if revision == shared.revision:
                return
            shared.builder = threading.get_ident()
            try:
                self._rebuild(source)
            finally:
                shared.builder = None
            shared.revision = revision

    def _rebuild(self, source: DefinitionSource) -> None:
        """Build every tenant's definitions, each in that tenant's view (an alias or a
        workflow step names jobs of its own tenant only)."""
        shared = self._s
        by_tenant = source.by_tenant()
        dynamic, later = {}, {}
        for tenant, records in by_tenant.items():
            specs, later[tenant] = source.build(records, self.scoped(tenant))
            dynamic[tenant] = {n: s for n, s in specs.items() if n not in shared.specs}
        shared.dynamic = dynamic
        built: dict[str, dict[str, Workflow]] = {}
        for tenant, pending in later.items():
            view, mine = self.scoped(tenant), built.setdefault(tenant, {})
            for d in pending:
                try:
                    wf = source.build_workflow(d, view)
                except errors.JobsysError as exc:
                    log.warning("jobsys: workflow definition %s skipped: %s", d.name, exc)
                    continue
                if wf.name not in shared.workflows:
                    mine[wf.name] = wf
        shared.dynamic_workflows = built

    def is_dynamic(self, name: str) -> bool:
        return name not in self._s.specs and name not in self._s.workflows

    def _mine(self) -> dict[str, JobSpec]:
        return {} if self.tenant is None else self._s.dynamic.get(self.tenant, {})

    def _my_workflows(self) -> dict[str, Workflow]:
        return {} if self.tenant is None else self._s.dynamic_workflows.get(self.tenant, {})

    # --- lookups -----------------------------------------------------------------------

    @property
    def workflows(self) -> dict[str, Workflow]:
        """The workflows of the catalog, by name, each checked against these jobs, and those
        this view's tenant registered at runtime."""
        if self._s.source is None or self.tenant is None:
            return self._s.workflows
        self.refresh()
        return {**self._my_workflows(), **self._s.workflows}

    def add_workflow(self, wf: Workflow, check: Callable[[Workflow, Registry], None]) -> None:
        """Add a workflow of the catalog, once ``check`` (``workflow_checks.check``) accepts it
        in this registry; ``catalog.load_registry`` adds them once every job is known."""
        shared = self._s
        if wf.name in shared.workflows and shared.workflows[wf.name] is not wf:
            raise errors.WorkflowDeclarationError(wf.name, "-", "name", "declared twice")
        if wf.name in shared.specs:
            raise errors.WorkflowDeclarationError(wf.name, "-", "name", "a job has this name")
        check(wf, self)
        shared.workflows[wf.name] = wf

    def workflow(self, name: str) -> Workflow:
        found = self._s.workflows.get(name) or self._lookup_workflow(name)
        if found is not None:
            return found
        names = list(self.workflows)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        raise errors.UnknownJob(name, close) from None

    def _lookup_workflow(self, name: str) -> Workflow | None:
        if self._s.source is None or self.tenant is None:
            return None
        self.refresh(force=name not in self._my_workflows())
        return self._my_workflows().get(name)

    def add(self, spec: JobSpec) -> None:
        existing = self._s.specs.get(spec.name)
        if existing is not None and existing is not spec:
            raise errors.JobDeclarationError(
                spec.name,
                "name",
                f"declared twice (in {existing.module} and {spec.module}); "
                "job names must be unique",
            )
        self._s.specs[spec.name] = spec

    def get(self, name: str) -> JobSpec:
        spec = self._s.specs.get(name) or self._lookup(name)
        if spec is not None:
            return spec
        close = difflib.get_close_matches(name, [s.name for s in self], n=3, cutoff=0.5)
        raise errors.UnknownJob(name, close) from None

    def _lookup(self, name: str) -> JobSpec | None:
        if self._s.source is None or self.tenant is None:
            return None
        self.refresh(force=name not in self._mine())
        return self._mine().get(name)

    def __contains__(self, name: object) -> bool:
        if name in self._s.specs:
            return True
        return isinstance(name, str) and self._lookup(name) is not None

    def __iter__(self) -> Iterator[JobSpec]:
        if self._s.source is not None and self.tenant is not None:
            self.refresh()
        every = {**self._mine(), **self._s.specs}
        return iter(sorted(every.values(), key=lambda s: s.name))

    def matching(self, text: str) -> tuple[str, ...]:
        """Names of the jobs whose name, description, tags or labels hold every keyword of
        ``text`` (as whole words, like the run search)."""
        wanted = set(keywords.words(text))
        if not wanted:
            return ()
        return tuple(sorted(spec.name for spec in self if holds_words(spec, wanted)))

    def __len__(self) -> int:
        return len(self._s.specs) + len(self._mine())
