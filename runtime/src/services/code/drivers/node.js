// sandlot's JavaScript driver: one long-lived node process per code context.
//
// Started as `node --expose-internals -e <this file>` with the host's pipes
// on fd 3 (requests in) and fd 4 (messages out), the cell's stdout and
// stderr on fds 1 and 2 and /dev/null on fd 0. The framing is documented in
// runtime/src/services/code/protocol.rs. Node's own modules only.
//
// Cells run as scripts in this process's global context, so top-level
// bindings (let and const too) persist from cell to cell as in node's REPL.
// `await` at top level goes through the REPL's own rewrite
// (internal/repl/await, reachable with --expose-internals).
'use strict';

// Everything lives inside this function: cells run in the same global
// scope as the script node was given, and must be free to use any name.
(() => {

const fs = require('fs');
const vm = require('vm');
const util = require('util');

const PROTOCOL = 1;
const MAX_HEADER = 64;

// Private copies of the control pipes (node opens everything close-on-exec),
// so that children of user code never inherit them.
function takeFd(fd, flags) {
  const copy = fs.openSync(`/proc/self/fd/${fd}`, flags);
  fs.closeSync(fd);
  return copy;
}
const reqFd = takeFd(3, 'r');
const msgFd = takeFd(4, 'w');

function send(msg) {
  const payload = Buffer.from(JSON.stringify(msg), 'utf8');
  let data = Buffer.concat([Buffer.from(`${payload.length}\n`), payload]);
  while (data.length > 0) {
    const n = fs.writeSync(msgFd, data);
    data = data.subarray(n);
  }
}

let processTopLevelAwait = null;
try {
  ({ processTopLevelAwait } = require('internal/repl/await'));
} catch (_) {
  // Without --expose-internals (or on a node without the module) cells run
  // as plain scripts: `await` at top level is then a SyntaxError.
}

// Requests arrive through an async reader so that timers and promises of
// user code keep running between and during cells.
let buffer = Buffer.alloc(0);
let waiting = null;
const reader = fs.createReadStream(null, { fd: reqFd, highWaterMark: 65536 });
reader.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  if (waiting) { const w = waiting; waiting = null; w(); }
});
reader.on('end', () => process.exit(0));
reader.on('error', () => process.exit(0));

function more() {
  return new Promise((resolve) => { waiting = resolve; });
}

async function readLine() {
  for (;;) {
    const nl = buffer.indexOf(10);
    if (nl >= 0) {
      const line = buffer.subarray(0, nl).toString('ascii');
      buffer = buffer.subarray(nl + 1);
      return line;
    }
    if (buffer.length > MAX_HEADER) throw new Error('request header too long');
    await more();
  }
}

async function readExact(n) {
  while (buffer.length < n) await more();
  const out = buffer.subarray(0, n);
  buffer = buffer.subarray(n);
  return out;
}

// "__sandlot_cell <id> <env count> <code bytes>\n", then per variable
// "<key bytes> <value bytes>\n<key><value>", then the code.
async function readRequest() {
  const [verb, id, nenv, ncode] = (await readLine()).split(' ');
  if (verb !== '__sandlot_cell') throw new Error(`unknown request ${verb}`);
  const env = {};
  for (let i = 0; i < Number(nenv); i++) {
    const [kl, vl] = (await readLine()).split(' ').map(Number);
    const key = (await readExact(kl)).toString('utf8');
    env[key] = (await readExact(vl)).toString('utf8');
  }
  const code = (await readExact(Number(ncode))).toString('utf8');
  return { id: Number(id), env, code };
}

// SIGINT: a running synchronous script is broken off by vm's breakOnSigint;
// a cell waiting on a promise is rejected here. Either way the process and
// its bindings live on.
let rejectPending = null;
process.on('SIGINT', () => {
  if (rejectPending) {
    const reject = rejectPending;
    rejectPending = null;
    const err = new Error('Script execution was interrupted by SIGINT');
    err.name = 'KeyboardInterrupt';
    reject(err);
  }
});
// Errors of callbacks that outlive their cell are reported on stderr; they
// never end the context.
process.on('uncaughtException', (err) => { console.error('Uncaught', err); });
process.on('unhandledRejection', (err) => { console.error('Unhandled rejection', err); });

function sendDisplay(value, main, id) {
  const data = { 'text/plain': util.inspect(value, { depth: 4, colors: false }) };
  send({ type: 'display', id, data, main });
}

async function runCell(id, code, count) {
  let source = code;
  let wrapped = false;
  if (processTopLevelAwait && code.includes('await')) {
    const rewritten = processTopLevelAwait(code);
    if (rewritten !== null) { source = rewritten; wrapped = true; }
  }
  if (!wrapped && /^\s*\{/.test(code) && !/;\s*$/.test(code)) {
    // `{a: 1}` is an object, as in the REPL, when it parses as one.
    try { new vm.Script(`(${code}\n)`); source = `(${code}\n)`; } catch (_) { /* a block */ }
  }
  const filename = `<cell-${count}>`;
  const script = new vm.Script(source, { filename, importModuleDynamically: vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER });
  let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  if (wrapped) {
    value = await new Promise((resolve, reject) => {
      rejectPending = reject;
      Promise.resolve(value).then(resolve, reject);
    }).finally(() => { rejectPending = null; });
    value = value ? value.value : undefined;
  }
  if (value !== undefined) {
    globalThis._ = value;
    sendDisplay(value, true, id);
  }
}

// The stack from the cell's frames down, without the driver's own.
function cellStack(stack) {
  const lines = stack.split('\n');
  const first = lines.findIndex((l) => /^\s+at /.test(l));
  if (first < 0) return stack;
  const driver = /\[eval\]|node:vm|node:internal|sigintHandlersWrap/;
  return lines.slice(0, first).concat(lines.slice(first).filter((l) => !driver.test(l))).join('\n');
}

function report(id, err) {
  let name = 'Error';
  let value = String(err);
  let stack = value;
  if (err instanceof Error || (err && typeof err === 'object' && 'message' in err)) {
    name = err.name || 'Error';
    value = String(err.message);
    stack = cellStack(String(err.stack || `${name}: ${value}`));
    if (err.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') name = 'KeyboardInterrupt';
  } else if (err === null || err === undefined) {
    value = String(err);
  }
  send({ type: 'error', id, name, value, traceback: stack });
}

async function main() {
  let count = 0;
  let currentId = 0;
  globalThis.display = (...values) => values.forEach((v) => sendDisplay(v, false, currentId));
  send({ type: 'ready', protocol: PROTOCOL, language: 'javascript', version: process.version });
  for (;;) {
    const { id, env, code } = await readRequest();
    currentId = id;
    count += 1;
    const saved = {};
    for (const [k, v] of Object.entries(env)) { saved[k] = process.env[k]; process.env[k] = v; }
    send({ type: 'start', id, execution_count: count });
    try {
      await runCell(id, code, count);
    } catch (err) {
      report(id, err);
    }
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
    send({ type: 'done', id, execution_count: count });
  }
}

main().catch((err) => { console.error('sandlot driver:', err); process.exit(70); });
})();
