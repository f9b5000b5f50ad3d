"""The job of the multi-host scenarios: it keeps an execution ledger outside jobsys.

Every execution appends a ``start`` line, then (after its work) an ``end`` line, to the ledger
file of the node it runs on (``$JOBSYS_TEST_LEDGER``): ``<run id> <node> <attempt> start|end
<unix time>``. The tests count executions per run from these files, whatever the run records
say.
"""

from __future__ import annotations

import os
import time

import pydantic

from jobsys import JobContext, RetryPolicy, job


class Work(pydantic.BaseModel):
    seconds: float = 0.0


class Done(pydantic.BaseModel):
    node: str


def write(ctx: JobContext, event: str) -> str:
    node = os.environ.get("JOBSYS_TEST_NODE", "?")
    ledger = os.environ.get("JOBSYS_TEST_LEDGER")
    if ledger:
        with open(ledger, "a") as f:  # one small append: whole lines, even from many processes
            f.write(f"{ctx.run_id} {node} {ctx.attempt} {event} {time.time():.3f}\n")
    return node


@job("cluster.ledger", timeout=120, retry=RetryPolicy(max_attempts=3, initial_backoff=0.2))
def ledger(data: Work, ctx: JobContext) -> Done:
    """Write ``start`` to the node's ledger, work ``seconds``, write ``end``."""
    node = write(ctx, "start")
    time.sleep(data.seconds)  # (the body's work)
    write(ctx, "end")
    return Done(node=node)
