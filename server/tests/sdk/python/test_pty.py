"""Terminals through envd's `process.Process` (`sandbox.pty`, unmodified
SDK): an interactive login shell on a terminal allocated inside the
sandbox, typed input, resize (with SIGWINCH), Ctrl-C, connect, kill, and
refusals of input sent the wrong way.

Markers are typed split (`ma""rk`) so that the terminal's echo of the
input never matches what the command prints."""

import threading
import time

import pytest
from e2b import CommandExitException, SandboxException
from e2b.sandbox.commands.command_handle import PtySize


class Screen:
    """Everything a terminal printed, read by a thread as it comes."""

    def __init__(self, handle):
        self.handle = handle
        self.data = b""
        self.lock = threading.Lock()
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            self.result = self.handle.wait(on_pty=self._append)
        except Exception as e:  # the test looks at it
            self.error = e

    def _append(self, chunk):
        with self.lock:
            self.data += chunk

    def text(self):
        with self.lock:
            return self.data.decode(errors="replace")

    def wait_for(self, needle, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return self.text()
            if not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never appeared on the terminal:\n{self.text()}")

    def ended(self, timeout=20):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the terminal's command did not end"


def test_an_interactive_shell_on_a_terminal(sandbox):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"FROM_SDK": "yes"})
    screen = Screen(handle)
    sandbox.pty.send_stdin(handle.pid, b"tty; echo term=$TERM from=$FROM_SDK; whoami; pwd; stty size; echo do\"\"ne\n")
    text = screen.wait_for("done\r\n")
    assert "/dev/pts/" in text
    assert "term=xterm-256color from=yes" in text
    assert "user\r\n/home/user\r\n24 80\r\n" in text
    assert handle.pid in [p.pid for p in sandbox.commands.list()]

    sandbox.pty.send_stdin(handle.pid, b"exit 3\n")
    screen.ended()
    assert isinstance(screen.error, CommandExitException), screen.error
    assert screen.error.exit_code == 3


def test_resize_reaches_the_foreground_program_as_sigwinch(sandbox):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80))
    screen = Screen(handle)
    sandbox.pty.send_stdin(
        handle.pid,
        b"bash -c 'trap \"echo wi\"\"nch; stty size; exit 0\" WINCH; echo ar\"\"med; while :; do sleep 0.05; done'\n",
    )
    screen.wait_for("armed\r\n")
    sandbox.pty.resize(handle.pid, PtySize(rows=40, cols=132))
    assert "winch\r\n40 132\r\n" in screen.wait_for("40 132\r\n")
    sandbox.pty.send_stdin(handle.pid, b"stty size; echo fi\"\"nal\n")
    assert "40 132\r\nfinal" in screen.wait_for("final\r\n")
    assert sandbox.pty.kill(handle.pid)
    screen.ended()


def test_ctrl_c_interrupts_the_foreground_command_only(sandbox):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80))
    screen = Screen(handle)
    sandbox.pty.send_stdin(handle.pid, b"sleep 100; echo sl\"\"ept\n")
    time.sleep(0.5)
    sandbox.pty.send_stdin(handle.pid, b"\x03")
    sandbox.pty.send_stdin(handle.pid, b"echo status=$?\n")
    text = screen.wait_for("status=130\r\n")
    assert "slept" not in text
    sandbox.pty.send_stdin(handle.pid, b"exit\n")
    screen.ended()
    assert screen.error is None and screen.result.exit_code == 0


def test_streamed_input_connect_and_kill(sandbox):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), cwd="/tmp")
    screen = Screen(handle)
    sandbox.pty.stream_input(handle.pid, [b"echo one-", "$((1+1)) ", b"; pwd\n"])
    screen.wait_for("one-2\r\n/tmp\r\n")

    # A second client sees what the terminal prints from now on.
    other = sandbox.pty.connect(handle.pid)
    second = Screen(other)
    sandbox.pty.send_stdin(handle.pid, b"echo to-\"\"both\n")
    second.wait_for("to-both\r\n")
    screen.wait_for("to-both\r\n")

    assert sandbox.pty.kill(handle.pid)
    screen.ended()
    second.ended()
    assert isinstance(screen.error, CommandExitException) and screen.error.exit_code == -1
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]
    assert not sandbox.pty.kill(handle.pid)


def test_input_sent_the_wrong_way_is_refused(sandbox):
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    piped = sandbox.commands.run("cat", background=True, stdin=True)
    try:
        with pytest.raises(SandboxException) as e:
            sandbox.commands.send_stdin(terminal.pid, "x")
        assert "terminal" in str(e.value)
        with pytest.raises(SandboxException) as e:
            sandbox.pty.send_stdin(piped.pid, b"x")
        assert "no terminal" in str(e.value)
        with pytest.raises(SandboxException) as e:
            sandbox.pty.resize(piped.pid, PtySize(rows=10, cols=10))
        assert "no terminal" in str(e.value)
        with pytest.raises(SandboxException) as e:
            sandbox.pty.resize(terminal.pid, PtySize(rows=0, cols=10))
        assert "rows" in str(e.value)
        with pytest.raises(SandboxException):
            sandbox.pty.create(PtySize(rows=70000, cols=80))
    finally:
        sandbox.pty.kill(terminal.pid)
        piped.kill()
