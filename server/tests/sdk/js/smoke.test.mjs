// The JavaScript SDK (npm `e2b`, unmodified) against sandlot-server: the
// same smoke test as the Python suites, through node's test runner. The
// Rust test server/tests/sdk.rs sets E2B_API_KEY, E2B_API_URL and
// E2B_SANDBOX_URL.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError } from 'e2b'

for (const v of ['E2B_API_KEY', 'E2B_API_URL', 'E2B_SANDBOX_URL']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run through cargo test -p sandlot-server --test sdk`)
}

test('create, info, commands, files, list, kill', async () => {
  const tag = `js-${Date.now()}`
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { tag }, envs: { FROM_JS: 'yes' } })
  try {
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.metadata.tag, tag)
    assert.equal(info.state, 'running')

    const r = await sbx.commands.run('echo $FROM_JS; whoami; pwd')
    assert.equal(r.stdout, 'yes\nuser\n/home/user\n')
    assert.equal(r.exitCode, 0)

    const seen = []
    await sbx.commands.run('echo one; sleep 0.3; echo two', { onStdout: (d) => seen.push(d) })
    assert.equal(seen.join(''), 'one\ntwo\n')

    await assert.rejects(sbx.commands.run('exit 4'), (e) => e instanceof CommandExitError && e.exitCode === 4)

    const bg = await sbx.commands.run('sleep 60', { background: true })
    assert.ok((await sbx.commands.list()).some((p) => p.pid === bg.pid))
    await bg.kill()

    await sbx.files.write('/tmp/js.txt', 'from node')
    assert.equal(await sbx.files.read('/tmp/js.txt'), 'from node')
    await sbx.files.write('rel.txt', 'relative')
    assert.equal((await sbx.commands.run('cat /home/user/rel.txt')).stdout, 'relative')
    const entries = await sbx.files.list('/tmp')
    assert.ok(entries.some((e) => e.name === 'js.txt'))
    assert.equal(await sbx.files.exists('/tmp/nope'), false)

    // watchDir is a server stream in the JS SDK (the Python SDK polls).
    await sbx.files.makeDir('/tmp/w')
    const events = []
    const watcher = await sbx.files.watchDir('/tmp/w', (e) => events.push(e))
    await sbx.files.write('/tmp/w/f.txt', 'x')
    for (let i = 0; i < 50 && !events.some((e) => e.name === 'f.txt'); i++) await new Promise((r) => setTimeout(r, 100))
    await watcher.stop()
    assert.ok(events.some((e) => e.name === 'f.txt' && e.type === 'create'), JSON.stringify(events))

    const paginator = Sandbox.list({ query: { metadata: { tag } } })
    const listed = await paginator.nextItems()
    assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])

    await sbx.setTimeout(120_000)
    const connected = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await connected.commands.run('echo again')).stdout, 'again\n')
  } finally {
    await sbx.kill()
  }
  assert.equal(await sbx.isRunning(), false)
})

test('pty: an interactive shell, typed input, resize, kill', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000 })
  try {
    let screen = ''
    const decoder = new TextDecoder()
    const waitFor = async (needle) => {
      for (let i = 0; i < 200 && !screen.includes(needle); i++) await new Promise((r) => setTimeout(r, 50))
      assert.ok(screen.includes(needle), `${JSON.stringify(needle)} never appeared:\n${screen}`)
    }
    const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (screen += decoder.decode(d)) })
    const type = (text) => sbx.pty.sendInput(terminal.pid, new TextEncoder().encode(text))
    // Markers are typed split so that the echo of the input never matches.
    await type('tty; stty size; echo o""k\n')
    await waitFor('24 80\r\nok\r\n')
    assert.match(screen, /\/dev\/pts\/\d+/)
    await sbx.pty.resize(terminal.pid, { cols: 100, rows: 30 })
    await type('stty size; echo o""k2\n')
    await waitFor('30 100\r\nok2\r\n')
    assert.equal(await sbx.pty.kill(terminal.pid), true)
    const ended = await terminal.wait().catch((e) => e)
    assert.equal(ended.exitCode, -1)
  } finally {
    await sbx.kill()
  }
})
