"""The web process only enqueues and waits: building the app must not import mlx or any model handler."""

from __future__ import annotations

import subprocess
import sys

from tests.stack import ROOT

PROBE = """
import sys
from web import create_app
app = create_app()
with app.test_client() as client:
    client.get('/openapi.json')
loaded = sorted(m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_', 'models.handlers')))
print(','.join(loaded))
"""


def test_web_app_imports_no_mlx():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
