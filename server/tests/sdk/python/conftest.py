"""Fixtures for the SDK suites. The Rust test `server/tests/sdk.rs` starts a
sandlot-server on loopback and runs pytest here with E2B_API_KEY,
E2B_API_URL and E2B_SANDBOX_URL pointing at it (SANDLOT_SERVER_PID names
the server process, for the memory checks). Every sandbox a test creates
is killed when it ends."""

import os

import pytest
from e2b import Sandbox

for var in ("E2B_API_KEY", "E2B_API_URL", "E2B_SANDBOX_URL"):
    if not os.environ.get(var):
        raise RuntimeError(
            f"{var} is not set: run these suites through `cargo test -p sandlot-server --test sdk`, "
            "which starts the server and sets it"
        )


@pytest.fixture
def sandbox():
    sbx = Sandbox.create(timeout=120)
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture
def created():
    """Sandboxes a test creates itself, killed at its end."""
    sandboxes = []
    yield sandboxes
    for sbx in sandboxes:
        try:
            sbx.kill()
        except Exception:
            pass
