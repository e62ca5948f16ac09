/**
 * `calico-ts selector '<expr>' [--labels k=v,...]`: parse a Calico selector, print its canonical form
 * and, given labels, whether they match. Needs no datastore.
 */
import { parseSelector } from '../calc/selector.js';
import { ValidationError } from '../lib/errors.js';

/**
 * `k=v,k2=v2` → labels. Each item splits on its first `=` (values may contain `=`); `''` is the empty
 * set and empty items (a trailing comma) are skipped. Keys and values are taken as given.
 */
export function parseLabelList(text: string): Record<string, string> {
  const labels = new Map<string, string>();
  for (const item of text.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new ValidationError('--labels', `${JSON.stringify(item)} is not key=value (write e.g. --labels role=web,tier=frontend)`);
    labels.set(item.slice(0, eq), item.slice(eq + 1));
  }
  // fromEntries makes own properties even for keys like "__proto__".
  return Object.fromEntries(labels);
}

/**
 * The command's output: the canonical selector, then `true`/`false` when labels were given. A selector
 * that does not parse throws a ValidationError naming the position, with a caret under it.
 */
export function selectorCommand(expr: string, labelsText?: string): string {
  let sel;
  try {
    sel = parseSelector(expr);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    const pos = /at position (\d+)/.exec(err.message);
    const reason = err.message.replace(/^selector: /, '');
    if (!pos) throw new ValidationError('selector', reason);
    const shown = expr.replace(/[\t\r\n]/g, ' ');
    throw new ValidationError('selector', `${reason}\n  ${shown}\n  ${' '.repeat(Number(pos[1]))}^`);
  }
  const lines = [sel.toString()];
  if (labelsText !== undefined) lines.push(String(sel.matches(parseLabelList(labelsText))));
  return lines.join('\n');
}
