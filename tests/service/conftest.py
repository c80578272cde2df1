"""Fixtures of the service tests: the gateway app in-process."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture
def client(cancer_registry):
    """The app on ``cancer`` (v1 champion, v2 challenger), limits small enough to reach in a test:
    50 rows a request, 200,000 bytes a body."""
    app = create_app(
        Settings(registry=cancer_registry.root, poll_interval=3600, max_batch_rows=50, max_body_bytes=200_000)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
