// The JavaScript code-interpreter SDK (npm `@e2b/code-interpreter`,
// unmodified) against sandlot-server: state between cells, streamed logs,
// rich results, errors, contexts and a timeout, through node's test runner.
// The sandbox uses the `base` template, which binds the host's /usr (python3
// with IPython, node, bash); see test_code_interpreter.py.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

for (const v of ['E2B_API_KEY', 'E2B_API_URL', 'E2B_SANDBOX_URL']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run through cargo test -p sandlot-server --test sdk`)
}

test('runCode: state, logs, results, errors, contexts, timeout', async () => {
  const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
  try {
    await sbx.runCode('x = 41')
    const answer = await sbx.runCode('x += 1\nx')
    assert.equal(answer.text, '42')
    assert.ok(answer.results[0].isMainResult)

    const seen = []
    const logs = await sbx.runCode("import sys\nprint('one')\nprint('two', file=sys.stderr)", {
      onStdout: (m) => seen.push(m.line),
    })
    assert.deepEqual(seen, ['one\n'])
    assert.deepEqual(logs.logs.stdout, ['one\n'])
    assert.deepEqual(logs.logs.stderr, ['two\n'])

    const html = await sbx.runCode("class B:\n    def _repr_html_(self):\n        return '<i>b</i>'\nB()")
    assert.equal(html.results[0].html, '<i>b</i>')

    const failed = await sbx.runCode('undefined_name')
    assert.equal(failed.error.name, 'NameError')
    assert.match(failed.error.traceback, /undefined_name/)

    const js = await sbx.runCode('const n = 6; n * 7', { language: 'javascript' })
    assert.equal(js.text, '42')

    const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
    assert.equal(ctx.cwd, '/tmp')
    assert.equal((await sbx.runCode('x = "ctx"\nx', { context: ctx })).text, 'ctx')
    assert.equal((await sbx.runCode('x')).text, '42')
    assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
    await sbx.restartCodeContext(ctx)
    assert.equal((await sbx.runCode('x', { context: ctx })).error.name, 'NameError')
    await sbx.removeCodeContext(ctx)
    assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id))

    // The SDK aborts the request at its timeout; the closed connection
    // interrupts the cell, and the default context keeps its state.
    await assert.rejects(sbx.runCode('import time\ntime.sleep(120)', { timeoutMs: 2_000 }))
    assert.equal((await sbx.runCode('x', { timeoutMs: 30_000 })).text, '42')
  } finally {
    await sbx.kill()
  }
})
