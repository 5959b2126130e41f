"""Every MongoDB collection of the platform, and its indexes, made in one pass.

mongoengine makes a collection's indexes lazily, in each process, the first time it touches the collection. Several
processes starting at once on a new database (a stack's first start, a test's small stack) then create the same
collections at the same moment. MongoDB takes that; SecantusDB, the Mongo-wire server used where no ``mongod`` is
installed, has hung on it (a thread spinning inside WiredTiger's cursor insert, docs/limits.md). Making them all
first, from one process, leaves the others nothing to create: ``python -m tasks.schema`` against ``MONGODB_URL``,
or ``create_schema`` on a pymongo database (the tests do it for every new database they start services on).
"""

from __future__ import annotations

import mongoengine as me
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import CollectionInvalid

from config.audit import AuditEntry
from config.keys import ApiKey
from config.settings import Settings
from models.registry import ModelRecord
from rag.document_store import RagCollection, RagDocument
from tasks.batch_store import Batch, BatchLine
from tasks.file_store import StoredFile
from tasks.fusion.workflow_store import ComposedWorkflow, FusionRun
from tasks.job_store import Job
from tasks.response_store import StoredResponse
from tasks.vector_store_map import VectorStoreFile, VectorStoreRecord
from tasks.webhooks import Delivery, Webhook

DOCUMENTS: tuple[type[me.Document], ...] = (
    AuditEntry,
    ApiKey,
    ModelRecord,
    RagCollection,
    RagDocument,
    Batch,
    BatchLine,
    StoredFile,
    ComposedWorkflow,
    FusionRun,
    Job,
    StoredResponse,
    VectorStoreRecord,
    VectorStoreFile,
    Webhook,
    Delivery,
)


def create_schema(database: Database) -> list[str]:
    """Makes every collection of ``DOCUMENTS`` missing from ``database``, then the indexes mongoengine would make
    for each (``Document.ensure_indexes``, done here with pymongo: no mongoengine connection is needed); the names of
    the collections it made."""
    made = []
    for document in DOCUMENTS:
        name = document._get_collection_name()
        if name not in database.list_collection_names(filter={"name": name}):
            try:
                database.create_collection(name)
                made.append(name)
            except CollectionInvalid:  # another process made it since
                pass
        background = document._meta.get("index_background", False)
        for spec in document._meta["index_specs"]:
            options = {**(document._meta.get("index_opts") or {}), **spec}
            fields = options.pop("fields")
            options.pop("cls", None)
            database[name].create_index(fields, background=background, **options)
    return made


def main() -> int:
    settings = Settings.from_env()
    with MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=30000) as client:
        made = create_schema(client[settings.database_name])
    print(f"{len(made)} collections made, {len(DOCUMENTS) - len(made)} there already; every index in place")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
