"""The one DynamoDB table of relayflow: a store per entity family, over shared primitives.

    base.py         BaseStore (_get/_put/_update/_query_page/_query_all/_delete_keys), ConditionFailed
    keys.py         the key helpers more than one store spells (tenant partition, execution, sweep)
    workflows.py    workflows, versions, nodes, edges          WorkflowStore
    models.py       models                                     ModelStore
    executions.py   executions and single runs' node records   ExecutionStore
    api_keys.py     API keys                                   ApiKeyStore
    uploads.py      the S3 trigger's upload markers            UploadStore
    webhooks.py     signing secrets, delivery attempts         WebhookStore
    datasets.py     datasets, versions, dataset uploads        DatasetStore

A service gets them as ``deps.stores().<entity>`` (adapters/stores.py builds the set once per
table). What crosses from a store into a service, and back, is a typed record: the execution's in
domain/execution_record.py, the others' in domain/records.py; the raw items stay in here.
Beside them, also in this table: a batch run's outcomes and counters
(adapters/batch_store.py), the budget (adapters/budget.py), rate-limit windows
(adapters/rate_windows.py) and the sweep index (adapters/sweep.py).

Key layout (every key starts with the tenant, so one tenant can never address another's items):

    T#t#WF#wf       WF              workflow            gsi1: T#t#WFS / created#id
    T#t#V#v         V               version             gsi1: T#t#WF#wf#VS / number
    T#t#V#v         N#node          node of the version
    T#t#V#v         E#edge          edge of the version
    T#t#M#m         M               model               gsi1: T#t#MS / created#id
    T#t#X#x         X               execution           sweep: ACTIVE#n | SETTLE#n / created#t#id
    T#t#X#x         XL              the run's listing entry  gsi1: T#t#WF#wf#XS / created#id
                                                        gsi2: T#t#WF#wf#XS#status / created#id
    T#t#X#x         N#node          node record of a single run
    KEY#k           KEY             API key (by key id)  gsi1: T#t#KEYS / created#id
    T#t#X#x         D#time#d#n      webhook delivery attempt n   gsi1: T#t#WF#wf#DS / time#d#n
    T#t#WF#wf       WHSECRET        webhook signing secret of the workflow (never in API answers)
    T#t#UP#digest   UP              an S3 upload the trigger has seen (dedup marker, expires_at)
    T#t#D#d         D               dataset             gsi1: T#t#DS / created#id
    T#t#D#d         V#v             dataset version (its items are an S3 object, see services/batch.py)
    T#t#D#d         U#u             dataset file upload in progress (expires_at)
    T#t#X#x#Rnn     R#item          outcome of one item of a batch run, with its nodes' records
                                    (nn: a hash of the item id; see adapters/batch_store.py)
    T#t#X#x#Cnn     C               one of 16 shards of a batch run's progress counters
    T#t#M#m         RL#window       a model's rate-limit window (adapters/rate_windows.py, expires_at)
    BUDGET#batch_parallelism BUDGET the account-wide budget of batch parallelism (adapters/budget.py)
    SWEEP#cursor    SWEEP           where the sweeper's next pass starts in each shard (adapters/sweep.py)

The API-key item is the one key not led by the tenant: the authorizer learns the tenant from it. It
holds only the SHA-256 of the key (see services/apikeys.py); the authorizer reads it with one GetItem.
The budget item and the sweeper's cursor are the others: they are the deployment's, not a tenant's.

A run is listed through its small listing entry, not its execution item (adapters/table/
executions.py): the entry changes only with the run's status, so the writes of a running run never
reach gsi1/gsi2, and a listing page reads its runs with one BatchGetItem. (Runs recorded before
entries existed carry the index keys on their own item, and are listed so until they expire.)

The ``sweep`` index is sparse: only executions that need watching are in it (adapters/sweep.py).
``ACTIVE#<shard>`` holds every pending or running run; a terminal status change moves the run to
``SETTLE#<shard>`` until what follows a run's end (its budget released, its last status event
published) is done, and then it leaves the index. Nothing else ever has ``sweep_pk``.
"""

from relayflow_runtime.adapters.table.api_keys import ApiKeyStore
from relayflow_runtime.adapters.table.base import ConditionFailed
from relayflow_runtime.adapters.table.datasets import DatasetStore
from relayflow_runtime.adapters.table.executions import ExecutionEnded, ExecutionStore, NodeAlreadyEnded
from relayflow_runtime.adapters.table.models import ModelStore
from relayflow_runtime.adapters.table.uploads import UploadStore
from relayflow_runtime.adapters.table.webhooks import WebhookStore
from relayflow_runtime.adapters.table.workflows import WorkflowStore

__all__ = [
    "ApiKeyStore",
    "ConditionFailed",
    "DatasetStore",
    "ExecutionEnded",
    "ExecutionStore",
    "ModelStore",
    "NodeAlreadyEnded",
    "UploadStore",
    "WebhookStore",
    "WorkflowStore",
]
