# sandlot's Python driver: one long-lived interpreter per code context.
#
# Started as `python3 -u -c <this file> [--no-ipython]` with the host's pipes
# on fd 3 (requests in) and fd 4 (messages out), the cell's stdout and stderr
# on fds 1 and 2 and /dev/null on fd 0. The framing is documented in
# runtime/src/services/code/protocol.rs. Standard library only: IPython and
# matplotlib are used when they can be imported, never required.

# Start-up time counts (a context's first cell waits for it): builtin
# modules (_ast, binascii) instead of ast and base64, traceback only when a
# cell fails.
import _ast
import _json
import binascii
import os
import signal
import sys

PROTOCOL = 1
MAX_HEADER = 64
# inspect.CO_COROUTINE, ast.PyCF_ONLY_AST, ast.PyCF_ALLOW_TOP_LEVEL_AWAIT:
# the values the compiler takes, without importing inspect or ast.
_CO_COROUTINE = 0x80
_PYCF_ONLY_AST = 0x400
_PYCF_TOP_LEVEL_AWAIT = 0x2000


def _b64(data):
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _take_fd(fd):
    # A private, close-on-exec copy: children of user code never inherit
    # the control pipes, and user code writing to fd 3 or 4 hits nothing.
    new = os.dup(fd)
    os.close(fd)
    return new


_REQ = os.fdopen(_take_fd(3), "rb", buffering=0)
_MSG = _take_fd(4)


def _dumps(value):
    """JSON text of a message. The json package would import re and enum
    (most of the driver's start-up); the C string encoder is all it needs."""
    if value is None or value is True or value is False:
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, str):
        return _json.encode_basestring(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        # NaN and infinities are not JSON.
        return float.__repr__(value) if value - value == 0 else "null"
    if isinstance(value, dict):
        return "{" + ",".join(_json.encode_basestring(str(k)) + ":" + _dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return _json.encode_basestring(str(value))


def _send(msg):
    payload = _dumps(msg).encode("utf-8", "replace")
    data = b"%d\n" % len(payload) + payload
    while data:
        n = os.write(_MSG, data)
        data = data[n:]


def _read_exact(n):
    chunks = []
    while n > 0:
        b = _REQ.read(n)
        if not b:
            raise EOFError
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _read_line():
    line = b""
    while not line.endswith(b"\n"):
        b = _REQ.read(1)
        if not b:
            raise EOFError
        line += b
        if len(line) > MAX_HEADER:
            raise ValueError("request header too long")
    return line[:-1].decode("ascii")


def _read_request():
    # "__sandlot_cell <id> <env count> <code bytes>\n", then per variable
    # "<key bytes> <value bytes>\n<key><value>", then the code.
    verb, cell_id, nenv, ncode = _read_line().split(" ")
    if verb != "__sandlot_cell":
        raise ValueError("unknown request %r" % verb)
    env = {}
    for _ in range(int(nenv)):
        kl, vl = (int(x) for x in _read_line().split(" "))
        key = _read_exact(kl).decode("utf-8", "surrogateescape")
        env[key] = _read_exact(vl).decode("utf-8", "surrogateescape")
    code = _read_exact(int(ncode)).decode("utf-8", "replace")
    return int(cell_id), env, code


# SIGINT only interrupts user code: one arriving while the driver itself
# reads or writes its pipes is dropped, so the framing can never break.
_in_user_code = False


def _on_sigint(signum, frame):
    if _in_user_code:
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)


def _flush_std():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


# ---- rich display, following IPython's _repr_*_ conventions ----------------

_TEXT_REPRS = [
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_latex_", "text/latex"),
    ("_repr_javascript_", "application/javascript"),
]
_BINARY_REPRS = [
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_pdf_", "application/pdf"),
]
_BINARY_MIMES = {"image/png", "image/jpeg", "application/pdf"}


def _call_repr(obj, name):
    if isinstance(obj, type):
        return None
    method = getattr(obj, name, None)
    if not callable(method):
        return None
    try:
        value = method()
    except Exception:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        value = value[0]  # (data, metadata)
    return value


def _encode(mime, value):
    if value is None:
        return None
    if mime in _BINARY_MIMES:
        if isinstance(value, str):
            return value  # already base64, as IPython accepts it
        if isinstance(value, (bytes, bytearray)):
            return _b64(bytes(value))
        return None
    if mime == "application/json" or mime.endswith("+json"):
        return value if isinstance(value, (dict, list)) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _figure_png(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return _b64(buf.getvalue())


def _is_figure(obj):
    mpl_figure = sys.modules.get("matplotlib.figure")
    return mpl_figure is not None and isinstance(obj, mpl_figure.Figure)


def format_bundle(obj):
    """The MIME bundle of `obj`: every representation it offers."""
    data = {}
    bundle = _call_repr(obj, "_repr_mimebundle_")
    if isinstance(bundle, dict):
        for mime, value in bundle.items():
            encoded = _encode(str(mime), value)
            if encoded is not None:
                data[str(mime)] = encoded
    for name, mime in _TEXT_REPRS + _BINARY_REPRS:
        if mime not in data:
            encoded = _encode(mime, _call_repr(obj, name))
            if encoded is not None:
                data[mime] = encoded
    if "application/json" not in data:
        encoded = _encode("application/json", _call_repr(obj, "_repr_json_"))
        if encoded is not None:
            data["application/json"] = encoded
    if _is_figure(obj) and "image/png" not in data:
        try:
            data["image/png"] = _figure_png(obj)
        except Exception:
            pass
    if "text/plain" not in data:
        try:
            data["text/plain"] = repr(obj)
        except Exception as e:
            data["text/plain"] = "<repr failed: %s: %s>" % (type(e).__name__, e)
    return data


_cell_id = 0


def _publish(data, main=False):
    _flush_std()  # stdout printed before this output arrives before it
    _send({"type": "display", "id": _cell_id, "data": data, "main": main})


def display(*objs, **kwargs):
    """Shows each object as a rich output of the running cell."""
    raw = kwargs.get("raw", False)
    for obj in objs:
        if raw and isinstance(obj, dict):
            _publish({k: v for k, v in obj.items() if v is not None})
        else:
            _publish(format_bundle(obj))


# ---- matplotlib: open figures become PNG outputs ----------------------------

os.environ.setdefault("MPLBACKEND", "Agg")


def _flush_figures():
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    try:
        numbers = pyplot.get_fignums()
    except Exception:
        return
    for num in numbers:
        try:
            fig = pyplot.figure(num)
            _publish({"image/png": _figure_png(fig), "text/plain": repr(fig)})
        except Exception:
            pass
    try:
        pyplot.close("all")
    except Exception:
        pass


def _patch_pyplot_show():
    # plt.show() in a cell shows the figures at that point, as a notebook's
    # inline backend does (Agg's own show only warns).
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or getattr(pyplot.show, "_sandlot", False):
        return

    def show(*args, **kwargs):
        _flush_figures()

    show._sandlot = True
    pyplot.show = show


# ---- running cells ------------------------------------------------------------


class _Env:
    """Environment variables set for one cell and restored after it."""

    def __init__(self, env):
        self.env = env
        self.saved = {}

    def __enter__(self):
        for key, value in self.env.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc):
        for key, old in self.saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class StdlibRunner:
    """Cells in one namespace, like a notebook kernel without IPython."""

    ipython = False

    def __init__(self):
        import builtins

        self.namespace = {"__name__": "__main__", "__builtins__": builtins, "display": display}
        builtins.display = display
        self.execution_count = 0
        self._loop = None
        # Cell sources for tracebacks, given to linecache (which imports
        # tokenize and re) only once a cell fails.
        self.sources = {}

    def _await(self, coro):
        import asyncio

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def _run(self, code_obj):
        result = eval(code_obj, self.namespace)
        if code_obj.co_flags & _CO_COROUTINE:
            result = self._await(result)
        return result

    def run_cell(self, code):
        global _in_user_code
        self.execution_count += 1
        filename = "<cell-%d>" % self.execution_count
        self.sources[filename] = code
        _send({"type": "start", "id": _cell_id, "execution_count": self.execution_count})
        _patch_pyplot_show()
        try:
            flags = _PYCF_TOP_LEVEL_AWAIT
            tree = compile(code, filename, "exec", flags=_PYCF_ONLY_AST | flags)
            last = None
            if tree.body and isinstance(tree.body[-1], _ast.Expr):
                last = _ast.Expression(tree.body.pop().value)
            body = compile(tree, filename, "exec", flags=flags)
            tail = compile(last, filename, "eval", flags=flags) if last else None
            _in_user_code = True
            try:
                self._run(body)
                value = self._run(tail) if tail is not None else None
            finally:
                _in_user_code = False
            _patch_pyplot_show()
            if value is not None and not code.rstrip().endswith(";"):
                self.namespace["_"] = value
                if not _is_figure(value):
                    _publish(format_bundle(value), main=True)
        except BaseException as e:  # noqa: B902 - KeyboardInterrupt, SystemExit too
            _in_user_code = False
            self._report(e)
        _flush_figures()

    def _report(self, e):
        import linecache
        import traceback

        for filename, code in self.sources.items():
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)

        tb = e.__traceback__
        # Hide the driver's own frames: the traceback starts in the cell.
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        lines = traceback.format_exception(type(e), e, tb)
        _flush_std()
        _send({
            "type": "error",
            "id": _cell_id,
            "name": type(e).__name__,
            "value": str(e),
            "traceback": "".join(lines),
        })


class IPythonRunner:
    """Cells through IPython's InteractiveShell: magics, `!cmd`, `%%bash`."""

    ipython = True

    def __init__(self):
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        config = Config()
        config.HistoryManager.enabled = False  # no sqlite file in $HOME
        config.InteractiveShell.colors = "NoColor"
        config.InteractiveShell.separate_in = ""
        config.InteractiveShell.separate_out = ""
        config.InteractiveShell.separate_out2 = ""
        self.shell = shell = InteractiveShell.instance(config=config)
        from IPython.display import display as ipython_display

        shell.user_ns["display"] = ipython_display

        def publish(data, metadata=None, source=None, **kwargs):
            _publish({k: _encode(k, v) for k, v in data.items() if _encode(k, v) is not None})

        shell.display_pub.publish = publish
        hook = shell.displayhook
        hook.write_output_prompt = lambda: None

        def write_format_data(format_dict, md_dict=None):
            data = {k: _encode(k, v) for k, v in format_dict.items()}
            _publish({k: v for k, v in data.items() if v is not None}, main=True)

        hook.write_format_data = write_format_data
        hook.finish_displayhook = lambda: None
        shell._showtraceback = self._showtraceback
        # Figures: IPython's PNG formatter for matplotlib Figure objects.
        self.error = None

    @property
    def execution_count(self):
        # IPython's counter is the number the next cell will get.
        return self.shell.execution_count - 1

    def _showtraceback(self, etype, evalue, stb):
        self.error = {
            "type": "error",
            "id": _cell_id,
            "name": etype.__name__ if etype else "Error",
            "value": str(evalue),
            "traceback": "\n".join(stb),
        }

    def run_cell(self, code):
        global _in_user_code
        count = self.shell.execution_count
        _send({"type": "start", "id": _cell_id, "execution_count": count})
        _patch_pyplot_show()
        self.error = None
        _in_user_code = True
        try:
            self.shell.run_cell(code, store_history=True)
        except BaseException as e:  # an interrupt between IPython's own guards
            import traceback

            self._showtraceback(type(e), e, traceback.format_exception(type(e), e, e.__traceback__))
        finally:
            _in_user_code = False
        _patch_pyplot_show()
        if self.error is not None:
            _flush_std()
            _send(self.error)
        _flush_figures()


def _make_runner():
    if "--no-ipython" not in sys.argv[1:]:
        try:
            return IPythonRunner()
        except ImportError:
            pass
    return StdlibRunner()


def main():
    global _cell_id
    runner = _make_runner()
    _send({
        "type": "ready",
        "protocol": PROTOCOL,
        "language": "python",
        "ipython": runner.ipython,
        "version": sys.version.split()[0],
    })
    while True:
        try:
            _cell_id, env, code = _read_request()
        except EOFError:
            return
        with _Env(env):
            runner.run_cell(code)
        _flush_std()
        _send({"type": "done", "id": _cell_id, "execution_count": runner.execution_count})


main()
