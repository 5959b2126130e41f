"""Files of the OpenAI Files API: their bytes under the data folder (``files/<id>``), their records in MongoDB.

A batch's output and error files are recorded when the batch ends and written
on their first read (``rendered`` is False until then): their lines are the
batch's line records, shaped by the web as the synchronous endpoints shape
their answers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import mongoengine as me

from config.clock import now
from config.ownership import owned_by

PURPOSES = ("batch", "user_data", "assistants")
"""What a client may upload a file for; ``batch_output`` files are the platform's own."""
OUTPUT_PURPOSE = "batch_output"


class StoredFile(me.Document):
    meta = {"collection": "files", "indexes": [("owner", "created_at"), ("purpose", "created_at"), "batch_id"]}

    file_id = me.StringField(primary_key=True)
    filename = me.StringField(required=True)
    purpose = me.StringField(required=True)
    size = me.IntField(db_field="bytes")
    created_at = me.DateTimeField(required=True)
    owner = me.StringField()
    """The API key that uploaded the file, or whose batch wrote it (see ``config.ownership``)."""
    requests = me.IntField()
    """Lines of a batch input file."""
    batch_id = me.StringField()
    """The batch whose output or error lines this file holds."""
    kind = me.StringField(choices=("output", "error"))
    rendered = me.BooleanField(default=True)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.file_id,
            "object": "file",
            "bytes": self.size or 0,
            "created_at": int(self.created_at.timestamp()),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def path_of(data_dir: Path, file_id: str) -> Path:
    return Path(data_dir) / "files" / file_id


def write_bytes(data_dir: Path, file_id: str, data: bytes) -> None:
    """Writes the file whole or not at all (a temporary file renamed into place)."""
    target = path_of(data_dir, file_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{file_id}.{uuid.uuid4().hex[:8]}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)


def create(
    data_dir: Path, data: bytes, filename: str, purpose: str, owner: str | None, requests: int | None = None
) -> StoredFile:
    """Stores an uploaded file: its bytes first, then its record (a failed insert removes the bytes)."""
    stored = StoredFile(
        file_id=new_file_id(),
        filename=filename,
        purpose=purpose,
        size=len(data),
        created_at=now(),
        owner=owner,
        requests=requests,
    )
    write_bytes(data_dir, stored.file_id, data)
    try:
        stored.save(force_insert=True)
    except Exception:
        path_of(data_dir, stored.file_id).unlink(missing_ok=True)
        raise
    return stored


def record_output(file_id: str, batch_id: str, kind: str, owner: str | None) -> None:
    """Records a batch's output or error file, to be written on its first read; doing it twice changes nothing."""
    StoredFile.objects(file_id=file_id).update_one(
        upsert=True,
        set_on_insert__filename=f"{batch_id}_{kind}.jsonl",
        set_on_insert__purpose=OUTPUT_PURPOSE,
        set_on_insert__size=0,
        set_on_insert__created_at=now(),
        set_on_insert__owner=owner,
        set_on_insert__batch_id=batch_id,
        set_on_insert__kind=kind,
        set_on_insert__rendered=False,
    )


def mark_rendered(file_id: str, size: int) -> None:
    StoredFile.objects(file_id=file_id).update_one(set__rendered=True, set__size=size)


def get(file_id: str, sees: str | None = None) -> StoredFile | None:
    """The file, if it exists and ``sees`` may see it."""
    return StoredFile.objects(file_id=file_id, **owned_by(sees)).first()


def read(data_dir: Path, file_id: str) -> bytes:
    return path_of(data_dir, file_id).read_bytes()


def search(
    sees: str | None, purpose: str | None, after: str | None, limit: int, order: str
) -> tuple[list[StoredFile], bool]:
    """A page of the files ``sees`` may see, newest first with ``order`` desc; whether more follow."""
    query = StoredFile.objects(**owned_by(sees), **({"purpose": purpose} if purpose else {}))
    direction = "-" if order == "desc" else "+"
    if after:
        cursor = get(after, sees)
        if cursor is not None:
            later = "lt" if order == "desc" else "gt"
            query = query.filter(
                me.Q(**{f"created_at__{later}": cursor.created_at})
                | me.Q(created_at=cursor.created_at, **{f"file_id__{later}": cursor.file_id})
            )
    found = list(query.order_by(f"{direction}created_at", f"{direction}file_id").limit(limit + 1))
    return found[:limit], len(found) > limit


def delete(data_dir: Path, file_id: str, sees: str | None = None) -> bool:
    """Removes the record, then the bytes; False when ``sees`` has no such file."""
    if not StoredFile.objects(file_id=file_id, **owned_by(sees)).delete():
        return False
    path_of(data_dir, file_id).unlink(missing_ok=True)
    return True
