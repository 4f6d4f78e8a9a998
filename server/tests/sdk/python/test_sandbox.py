"""Sandbox lifecycle through the unmodified SDK: create, info, list with
filters and paging, connect, set_timeout, pause and resume, metrics, kill,
and the timeout ending a sandbox."""

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException, SandboxException


def test_create_with_metadata_envs_and_timeout(created):
    tag = uuid.uuid4().hex
    before = datetime.now(timezone.utc)
    sbx = Sandbox.create(timeout=60, metadata={"tag": tag, "user_id": "u1"}, envs={"GREETING": "hello"})
    created.append(sbx)
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.template_id == "base"
    assert info.metadata == {"tag": tag, "user_id": "u1"}
    assert info.state == SandboxState.RUNNING
    assert info.cpu_count >= 1 and info.memory_mb >= 64
    # end_at is exact: created + timeout.
    assert (info.end_at - info.started_at).total_seconds() == 60
    assert info.started_at >= before - timedelta(seconds=1)
    out = sbx.commands.run("echo $GREETING")
    assert out.stdout == "hello\n"


def test_default_timeout_is_300_seconds(created):
    sbx = Sandbox.create()
    created.append(sbx)
    info = sbx.get_info()
    assert (info.end_at - info.started_at).total_seconds() == 300


def test_unknown_template_is_an_error():
    with pytest.raises(SandboxException) as e:
        Sandbox.create(template="no-such-template")
    assert "no-such-template" in str(e.value)


def test_list_filters_by_metadata_and_pages(created):
    tag = uuid.uuid4().hex
    for i in range(3):
        created.append(Sandbox.create(timeout=60, metadata={"tag": tag, "n": str(i)}))
    created.append(Sandbox.create(timeout=60, metadata={"tag": "other"}))

    paginator = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}), limit=2)
    first = paginator.next_items()
    assert len(first) == 2 and paginator.has_next
    second = paginator.next_items()
    assert len(second) == 1 and not paginator.has_next
    ids = {s.sandbox_id for s in first + second}
    assert ids == {s.sandbox_id for s in created[:3]}
    assert all(s.metadata["tag"] == tag for s in first + second)


def test_list_filters_by_state(created):
    tag = uuid.uuid4().hex
    running = Sandbox.create(timeout=60, metadata={"tag": tag})
    paused = Sandbox.create(timeout=60, metadata={"tag": tag})
    created.extend([running, paused])
    assert paused.pause() is True
    only_paused = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.PAUSED])).next_items()
    assert [s.sandbox_id for s in only_paused] == [paused.sandbox_id]
    only_running = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.RUNNING])).next_items()
    assert [s.sandbox_id for s in only_running] == [running.sandbox_id]


def test_connect_from_another_handle(sandbox):
    sandbox.files.write("/tmp/marker", "still here")
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.commands.run("cat /tmp/marker").stdout == "still here"


def test_connect_never_shortens_the_timeout(sandbox):
    end = sandbox.get_info().end_at
    Sandbox.connect(sandbox.sandbox_id, timeout=5)
    assert sandbox.get_info().end_at >= end - timedelta(seconds=1)
    Sandbox.connect(sandbox.sandbox_id, timeout=600)
    assert sandbox.get_info().end_at > end + timedelta(seconds=300)


def test_set_timeout_moves_the_end(sandbox):
    sandbox.set_timeout(30)
    info = sandbox.get_info()
    remaining = (info.end_at - datetime.now(timezone.utc)).total_seconds()
    assert 25 < remaining <= 31
    sandbox.set_timeout(600)
    remaining = (sandbox.get_info().end_at - datetime.now(timezone.utc)).total_seconds()
    assert 590 < remaining <= 601


def test_timeout_ends_the_sandbox(created):
    sbx = Sandbox.create(timeout=2)
    created.append(sbx)
    assert sbx.is_running()
    deadline = time.time() + 15
    while sbx.is_running() and time.time() < deadline:
        time.sleep(0.25)
    assert not sbx.is_running()
    with pytest.raises(NotFoundException):
        sbx.get_info()


def test_pause_and_resume_through_connect(sandbox):
    sandbox.commands.run("echo kept > /tmp/state")
    background = sandbox.commands.run("sleep 300", background=True)
    assert sandbox.pause() is True
    assert sandbox.get_info().state == SandboxState.PAUSED
    # Pausing a paused sandbox is no error: the SDK reports False (409).
    assert Sandbox.pause(sandbox.sandbox_id) is False
    resumed = Sandbox.connect(sandbox.sandbox_id)
    assert resumed.get_info().state == SandboxState.RUNNING
    assert resumed.commands.run("cat /tmp/state").stdout == "kept\n"
    # Processes survive a pause.
    assert background.pid in [p.pid for p in resumed.commands.list()]
    background.kill()


def test_kill_and_is_running(created):
    sbx = Sandbox.create(timeout=60)
    created.append(sbx)
    assert sbx.is_running()
    sbx.kill()
    assert not sbx.is_running()
    # Killing an unknown sandbox reports False (404).
    assert Sandbox.kill(sbx.sandbox_id) is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)


def test_metrics(sandbox):
    sandbox.commands.run("head -c 4000000 /dev/urandom > /tmp/blob")
    # A time series sampled every 5 s: the write shows from the next sample.
    deadline = time.monotonic() + 15
    while True:
        metrics = sandbox.get_metrics()
        assert len(metrics) >= 1
        m = metrics[-1]
        if m.disk_used >= 4_000_000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert m.cpu_count >= 1
    assert 0 < m.mem_used <= m.mem_total
    assert m.disk_used >= 4_000_000 and m.disk_total >= m.disk_used
    assert 0 <= m.cpu_used_pct


def test_idempotency_key_returns_the_same_sandbox(created):
    key = f"idem-{uuid.uuid4().hex}"
    first = Sandbox.create(timeout=60, idempotency_key=key)
    created.append(first)
    again = Sandbox.create(timeout=60, idempotency_key=key)
    assert again.sandbox_id == first.sandbox_id
    other = Sandbox.create(timeout=60, idempotency_key=f"idem-{uuid.uuid4().hex}")
    created.append(other)
    assert other.sandbox_id != first.sandbox_id
