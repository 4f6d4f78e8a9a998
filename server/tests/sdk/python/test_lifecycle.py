"""Lifecycle options through the unmodified SDK: `lifecycle={"on_timeout":
"pause"}` (the API's autoPause) pauses at the timeout instead of killing,
keeping files and processes, and `connect` resumes; with `auto_resume` a
request to the paused sandbox resumes it by itself."""

import time

from e2b import Sandbox


def wait_for_state(sbx, state, within=20):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if sbx.get_info().state == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"sandbox {sbx.sandbox_id} never became {state} (is {sbx.get_info().state})")


def test_auto_pause_pauses_at_the_timeout_and_connect_resumes(created):
    sbx = Sandbox.create(timeout=2, lifecycle={"on_timeout": "pause"})
    created.append(sbx)
    assert sbx.get_info().lifecycle["on_timeout"] == "pause"
    sbx.files.write("/tmp/kept.txt", "still here")
    counter = sbx.commands.run("while :; do date +%s%N > /tmp/tick; sleep 0.05; done", background=True)
    wait_for_state(sbx, "paused")
    # Frozen: the loop no longer writes.
    first = sbx.files.read("/tmp/tick")
    time.sleep(0.5)
    assert sbx.files.read("/tmp/tick") == first

    resumed = Sandbox.connect(sbx.sandbox_id, timeout=60)
    assert resumed.get_info().state == "running"
    assert resumed.files.read("/tmp/kept.txt") == "still here"
    assert counter.pid in [p.pid for p in resumed.commands.list()]
    assert resumed.commands.run("echo back").stdout == "back\n"


def test_auto_resume_wakes_a_paused_sandbox_on_request(created):
    sbx = Sandbox.create(timeout=2, lifecycle={"on_timeout": "pause", "auto_resume": True})
    created.append(sbx)
    assert sbx.get_info().lifecycle["auto_resume"] is True
    wait_for_state(sbx, "paused")
    # No connect: the command's request resumes it.
    assert sbx.commands.run("echo awake").stdout == "awake\n"
    assert sbx.get_info().state == "running"


def test_without_auto_pause_the_timeout_kills(created):
    sbx = Sandbox.create(timeout=2)
    created.append(sbx)
    assert sbx.get_info().lifecycle["on_timeout"] == "kill"
    deadline = time.monotonic() + 20
    while sbx.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sbx.is_running()
