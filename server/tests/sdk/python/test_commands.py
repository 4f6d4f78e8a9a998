"""Commands through the unmodified SDK: run, exit codes, env, cwd, users,
background commands, stdin, kill, list, connect, timeouts and streaming
callbacks."""

import threading
import time

import pytest
from e2b import CommandExitException, Sandbox, TimeoutException


def test_run_collects_output(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)


def test_commands_run_in_a_login_bash_as_user_in_home(sandbox):
    r = sandbox.commands.run('echo "$0 $(id -u) $(whoami) $HOME $PWD $BASH_VERSION"')
    shell, uid, name, home, cwd, version = r.stdout.split(maxsplit=5)
    assert (uid, name, home, cwd) == ("1000", "user", "/home/user", "/home/user")
    assert shell.endswith("bash") and version.strip()


def test_nonzero_exit_raises_command_exit_exception(sandbox):
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("echo oops >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stderr == "oops\n"


def test_env_cwd_and_user(sandbox):
    r = sandbox.commands.run("echo $A $B; pwd", envs={"A": "1", "B": "two words"}, cwd="/tmp")
    assert r.stdout == "1 two words\n/tmp\n"
    sandbox.files.make_dir("work")
    assert sandbox.commands.run("pwd", cwd="work").stdout == "/home/user/work\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"


def test_sandbox_envs_reach_every_command(created):
    sbx = Sandbox.create(timeout=60, envs={"FROM_CREATE": "yes"})
    created.append(sbx)
    assert sbx.commands.run("echo $FROM_CREATE").stdout == "yes\n"


def test_streaming_callbacks_see_output_while_the_command_runs(sandbox):
    # The command prints a line, then waits for a file that only the
    # on_stdout callback creates: it can finish only if its output reaches
    # the caller while it runs.
    seen = []

    def on_stdout(line):
        seen.append(("out", line))
        if line == "first\n":
            sandbox.files.write("/tmp/go", "")

    r = sandbox.commands.run(
        "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second; echo warn >&2",
        on_stdout=on_stdout,
        on_stderr=lambda line: seen.append(("err", line)),
        timeout=30,
    )
    assert r.stdout == "first\nsecond\n"
    assert seen[0] == ("out", "first\n")
    assert sorted(seen[1:]) == [("err", "warn\n"), ("out", "second\n")]


def test_background_command_wait_and_list(sandbox):
    handle = sandbox.commands.run("sleep 0.5; echo done", background=True)
    assert handle.pid in [p.pid for p in sandbox.commands.list()]
    listed = next(p for p in sandbox.commands.list() if p.pid == handle.pid)
    assert listed.cmd == "/bin/bash" and "echo done" in listed.args[-1]
    result = handle.wait()
    assert result.stdout == "done\n" and result.exit_code == 0
    deadline = time.time() + 5
    while handle.pid in [p.pid for p in sandbox.commands.list()] and time.time() < deadline:
        time.sleep(0.05)
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]


def test_kill_a_background_command(sandbox):
    handle = sandbox.commands.run("sleep 300", background=True)
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as e:
        handle.wait()
    assert e.value.exit_code != 0
    assert sandbox.commands.kill(handle.pid) is False


def test_stdin(sandbox):
    handle = sandbox.commands.run("cat; echo end", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "line one\n")
    sandbox.commands.send_stdin(handle.pid, b"line two\n")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "line one\nline two\nend\n"


def test_without_stdin_a_command_reads_end_of_file(sandbox):
    assert sandbox.commands.run("cat; echo eof").stdout == "eof\n"


def test_connect_to_a_running_command(sandbox):
    handle = sandbox.commands.run("sleep 1; echo late", background=True)
    again = sandbox.commands.connect(handle.pid)
    assert again.wait().stdout == "late\n"


def test_command_timeout(sandbox):
    start = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30", timeout=1)
    assert time.monotonic() - start < 10
    # The command is gone too.
    time.sleep(0.5)
    assert "sleep 30" not in sandbox.commands.run("ps -eo args").stdout


def test_timeout_zero_means_none(sandbox):
    assert sandbox.commands.run("sleep 1.2; echo ok", timeout=0).stdout == "ok\n"


def test_large_output_arrives_intact(sandbox):
    r = sandbox.commands.run("head -c 3000000 /dev/zero | tr '\\0' x")
    assert len(r.stdout) == 3_000_000 and set(r.stdout) == {"x"}


def test_commands_in_parallel(sandbox):
    results = {}

    def run(i):
        results[i] = sandbox.commands.run(f"sleep 0.3; echo {i}").stdout

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i}\n" for i in range(8)}


def test_missing_user_is_refused(sandbox):
    with pytest.raises(Exception) as e:
        sandbox.commands.run("true", user="nobody-here")
    assert "nobody-here" in str(e.value)
