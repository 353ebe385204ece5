"""What a LocalStack with a data directory does at start and stop (`LocalStack(data_dir=...)`).

* start: open the directory (private, locked, format checked: `relayflow.local.datadir`), put the
  stored items and objects back into moto, and record every write from then on
  (`relayflow.local.persistence`);
* the API key: the one printed last time, kept in the directory (unless $RELAYFLOW_API_KEY is set);
* runs that were pending or running when the last stack stopped cannot go on — their Step Functions
  executions and threads lived in that process. A single run whose every node completed before the
  stop is ended ``completed`` (its machine's Complete task, run at restart); any other is ended
  ``failed`` through the runtime's
  own reconciliation (`services.reconcile.settle`, as the reconciler and the sweeper settle an
  execution that ended without its handlers recording it: the run's record and open nodes, its
  batch budget, the sweep index, its status event), saying that the local stack stopped mid-run. A
  batch keeps the outcomes of the items it finished; retry-failed runs the rest;
* stop: write everything still dirty, merge the journal into the snapshot, unlock.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relayflow.local.datadir import DataDir, DataDirError
from relayflow.local.persistence import Persistence, RestoreReport, StateError

if TYPE_CHECKING:
    from relayflow.local.stack import LocalStack

__all__ = ["STOPPED_MID_RUN", "DurableState"]

log = logging.getLogger("relayflow.local")

IN_FLIGHT = frozenset({"pending", "running"})
STOPPED_MID_RUN = (
    "the local stack stopped while this run was in progress (relayflow serve was stopped or killed)"
)
_BATCH_HINT = "; the items it finished keep their results, and retry-failed runs the others"


class DurableState:
    """A stack's data directory while the stack runs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.directory: DataDir | None = None
        self.persistence: Persistence | None = None
        self.restored = RestoreReport()
        self._table: str | None = None

    def open(self) -> None:
        """Lock and check the directory (before anything else of the stack starts)."""
        self.directory = DataDir.open(self.path)

    def restore(self, stack: LocalStack) -> RestoreReport:
        """Put the stored state into the stack's (new, empty) tables and bucket; record from now."""
        assert self.directory is not None, "open() first"
        self._table = stack.environment.get("RELAYFLOW_TABLE")
        self.persistence = Persistence(self.directory.state, account_id=stack.account_id, region=stack.region)
        try:
            self.restored = self.persistence.restore(self._in_flight)
        except StateError as exc:
            path = self.directory.path
            raise DataDirError(
                f"{path} cannot be loaded into this stack: {exc}. Run the relayflow that wrote it, or move "
                f"it away (mv {path} {path}.old) to start with an empty one."
            ) from None
        self.persistence.start()
        return self.restored

    def _in_flight(self, table: str, item: dict[str, Any]) -> bool:
        return (
            table == self._table
            and item.get("kind") == {"S": "execution"}
            and item.get("status", {}).get("S") in IN_FLIGHT
        )

    def api_key(self) -> str | None:
        """$RELAYFLOW_API_KEY, else the key of the last start (registered again if need be), else
        a new one (kept for the next start)."""
        from relayflow_runtime.errors import RelayflowError
        from relayflow_runtime.services import apikeys

        if os.environ.get("RELAYFLOW_API_KEY"):
            return apikeys.ensure_local_key()
        assert self.directory is not None
        saved = self.directory.api_key()
        if saved is not None:
            try:
                apikeys.authenticate(apikeys.ensure_local_key(saved))
                return saved
            except RelayflowError as exc:  # revoked or expired since, or not a key any more
                log.warning("the saved API key cannot be used (%s): making a new one", exc)
        key = apikeys.ensure_local_key()  # $RELAYFLOW_API_KEY is unset: a new key
        self.directory.save_api_key(key)
        return key

    def settle_interrupted_runs(self) -> list[str]:
        """End every run found in flight at restore; returns their execution ids."""
        from relayflow_runtime.domain.engine import RunRef
        from relayflow_runtime.services import reconcile, run_machine

        settled = []
        for _, item in self.restored.watched:
            tenant, execution_id = item["tenant"]["S"], item["id"]["S"]
            batch = item.get("input_mode", {}).get("S") == "batch"
            run = RunRef(tenant=tenant, workflow_id=item["workflow_id"]["S"], execution_id=execution_id)
            try:
                if not batch and item["status"]["S"] == "running" and run_machine.all_nodes_completed(run):
                    # Its last node finished before the stop, its machine's Complete task did not.
                    run_machine.complete(run)
                else:
                    reconcile.settle(
                        tenant, execution_id, "FAILED", STOPPED_MID_RUN + (_BATCH_HINT if batch else ""), None
                    )
            except Exception:
                log.exception("could not settle run %s, interrupted by the last stop", execution_id)
                continue
            settled.append(execution_id)
        if settled:
            log.warning(
                "%d run(s) were in progress when the local stack last stopped: settled", len(settled)
            )
        self.restored.watched.clear()
        return settled

    def close(self) -> None:
        """Write everything still dirty, merge the journal, unlock (safe after a failed start)."""
        try:
            if self.persistence is not None:
                self.persistence.close()
                self.persistence = None
        finally:
            if self.directory is not None:
                self.directory.close()
                self.directory = None
