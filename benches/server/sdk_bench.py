"""Figures for issue 12's closing note, through the unmodified Python SDK
(the venv of server/tests/sdk) against a running sandlot-server.

    E2B_API_KEY=... E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 \
    SANDLOT_SERVER_PID=<pid> python sdk_bench.py [latency] [throughput] [memory] [load]

`run.sh` starts a release server and runs all of it. Every figure is a
median (with p90) of repeated calls on this machine; nothing is asserted.
"""

import os
import statistics
import sys
import threading
import time

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox

PID = int(os.environ["SANDLOT_SERVER_PID"])


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def census():
    return {
        "rss_kib": rss_kib(),
        "fds": len(os.listdir(f"/proc/{PID}/fd")),
        "threads": len(os.listdir(f"/proc/{PID}/task")),
        "sandboxes": len(Sandbox.list().next_items()),
    }


def timed(f, n):
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def report(name, stats, goal=None):
    median, p90 = stats
    goal = f"  (goal {goal})" if goal else ""
    print(f"{name:<40} median {median:8.2f} ms   p90 {p90:8.2f} ms{goal}", flush=True)


def latency():
    Sandbox.create().kill()  # warm: the base template, connection pools
    created = []
    report("Sandbox.create()", timed(lambda: created.append(Sandbox.create()), 50), "< 15 ms")
    sbx = created[0]
    sbx.commands.run("true")
    report('commands.run("echo hi")', timed(lambda: sbx.commands.run("echo hi"), 200), "< 5 ms")
    data = "x" * 1024
    sbx.files.write("/tmp/warm", data)

    def write_read():
        sbx.files.write("/tmp/one-kib", data)
        assert sbx.files.read("/tmp/one-kib") == data

    report("files.write + read, 1 KiB", timed(write_read, 200), "< 3 ms")
    report("get_info()", timed(sbx.get_info, 200))
    it = iter(created)
    report("kill()", timed(lambda: next(it).kill(), len(created)))
    # The code interpreter on the base template (python3 with IPython from
    # the host's /usr); warm: the default context already started.
    code = CodeSandbox.create(template="base", timeout=300)
    try:
        assert code.run_code("1+1").text == "2"
        report('run_code("1+1") warm', timed(lambda: code.run_code("1+1"), 200), "< 5 ms")
    finally:
        code.kill()


def throughput(clients=8, seconds=20):
    done = [0] * clients
    errors = []
    stop = time.monotonic() + seconds

    def loop(i):
        while time.monotonic() < stop:
            try:
                Sandbox.create().kill()
                done[i] += 1
            except Exception as e:  # counted, not hidden
                errors.append(repr(e))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    print(f"create+kill by {clients} clients for {seconds} s: {sum(done) / elapsed:.1f} sandboxes/s, {len(errors)} errors", flush=True)
    for e in errors[:5]:
        print("  error:", e)


def memory(count=50):
    time.sleep(6)  # let the metrics sampler take its first sample
    idle = census()
    print(f"server idle: RSS {idle['rss_kib'] / 1024:.1f} MiB, {idle['fds']} fds, {idle['threads']} threads", flush=True)
    sandboxes = [Sandbox.create(timeout=300) for _ in range(count)]
    for s in sandboxes:
        s.commands.run("true")
    time.sleep(6)
    busy = census()
    per = (busy["rss_kib"] - idle["rss_kib"]) / count
    print(f"server with {count} live sandboxes: RSS {busy['rss_kib'] / 1024:.1f} MiB ({per:.0f} KiB per sandbox), {busy['fds']} fds ({(busy['fds'] - idle['fds']) / count:.1f} per sandbox), {busy['threads']} threads", flush=True)
    for s in sandboxes:
        s.kill()


def create_run_kill(clients, seconds):
    """`clients` threads, each creating a sandbox, running `echo hi` in it
    and killing it, over and over for `seconds`: (cycles, errors)."""
    cycles = [0] * clients
    errors = []
    stop = time.monotonic() + seconds

    def client(i):
        while time.monotonic() < stop:
            try:
                s = Sandbox.create()
                try:
                    assert s.commands.run("echo hi").stdout == "hi\n"
                    cycles[i] += 1
                finally:
                    s.kill()
            except Exception as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(cycles), errors


def rounds(count=3, clients=50, seconds=60):
    """The RSS over rounds of create -> run -> kill, with the census 15 s
    after each (issue 12's load, repeated to see whether the server grows)."""
    print(f"census at start {census()}", flush=True)
    for n in range(count):
        cycles, errors = create_run_kill(clients, seconds)
        time.sleep(15)
        print(f"round {n + 1}: {cycles} cycles, {len(errors)} errors; census {census()}", flush=True)
        for e in errors[:3]:
            print("  error:", e)


def load(streams=100, clients=50, seconds=60):
    before = census()
    sandboxes = [Sandbox.create(timeout=600) for _ in range(streams)]
    received = [0] * streams
    errors = []

    def stream(i):
        try:
            r = sandboxes[i].commands.run(
                "for i in $(seq 1 2000); do echo line $i of a streaming command; done",
                on_stdout=lambda line: None,
            )
            received[i] = len(r.stdout)
        except Exception as e:
            errors.append(repr(e))

    t = time.monotonic()
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    expected = len("".join(f"line {i} of a streaming command\n" for i in range(1, 2001)))
    ok = sum(1 for r in received if r == expected)
    print(f"{streams} sandboxes streaming at once: {ok}/{streams} complete in {time.monotonic() - t:.1f} s, {len(errors)} errors", flush=True)
    for s in sandboxes:
        s.kill()

    cycles, cycle_errors = create_run_kill(clients, seconds)
    errors += cycle_errors
    time.sleep(6)
    after = census()
    print(f"{clients} clients create->run->kill for {seconds} s: {cycles} cycles, {len(errors)} errors", flush=True)
    print(f"census before {before}\ncensus after  {after}", flush=True)
    for e in errors[:5]:
        print("  error:", e)


if __name__ == "__main__":
    wanted = sys.argv[1:] or ["latency", "throughput", "memory"]
    for name in wanted:
        globals()[name]()
