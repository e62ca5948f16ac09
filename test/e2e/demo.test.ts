/**
 * `make demo` runs as a user sees it: the compiled demo program, start to finish, once.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { run } from '../helpers/proc.js';

const DEMO = fileURLToPath(new URL('../../demo/demo.js', import.meta.url));

describe('make demo', { timeout: 600_000 }, () => {
  it('shows a cross-host ping, the policy block, the ping back, and leaves no namespace behind', async () => {
    const child = spawn(process.execPath, [DEMO], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, output);
    const order = ['[4] Cross-host ping', '✔ client reaches web across hosts', '[6] The same ping is now blocked', '✔ blocked by demo-deny-client', '✔ client reaches web again', '[9] Cleaning up (done)', 'Demo finished'];
    let at = 0;
    for (const line of order) {
      const i = output.indexOf(line, at);
      assert.ok(i >= 0, `"${line}" missing or out of order:\n${output}`);
      at = i;
    }
    assert.match(output, /2 packets transmitted, 0 packets received, 100% packet loss/);
    const netns = (await run(['ip', 'netns', 'list'])).stdout;
    assert.doesNotMatch(netns, new RegExp(`^demo-${child.pid}-`, 'm'));
  });
});
