"""``tasks.schema`` makes every collection and index of a new database in one pass (``python -m tasks.schema``), so
that processes started together on it find them made."""

from __future__ import annotations

import os
import subprocess
import uuid

import pymongo

from tasks.schema import DOCUMENTS
from tests.stack import PYTHON, ROOT, Stack


def test_a_new_database_gets_every_collection_and_index_once(stack: Stack):
    url = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + f"/mlxf_schema_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **stack.env, "MONGODB_URL": url}
    first = subprocess.run([PYTHON, "-m", "tasks.schema"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"{len(DOCUMENTS)} collections made, 0 there already" in first.stdout

    database = pymongo.MongoClient(url).get_default_database()
    for document in DOCUMENTS:
        name = document._get_collection_name()
        made = {tuple(map(tuple, index["key"])) for index in database[name].index_information().values()}
        wanted = {tuple(map(tuple, spec["fields"])) for spec in document._meta["index_specs"]}
        assert wanted <= made, (name, wanted - made)

    again = subprocess.run([PYTHON, "-m", "tasks.schema"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert f"0 collections made, {len(DOCUMENTS)} there already" in again.stdout
