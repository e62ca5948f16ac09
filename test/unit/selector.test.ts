import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ValidationError } from '../../plugin/lib/errors.js';
import {
  clearSelectorCache,
  compareCodePoints,
  MAX_LABEL_LENGTH,
  MAX_NESTING,
  matchSelector,
  parseSelector,
  SELECTOR_CACHE_SIZE,
  selectorCacheSize,
  tokenizeSelector,
  type LabelRestriction,
} from '../../plugin/calc/selector.js';

// ---------------------------------------------------------------------------------------------
// Conformance data from Calico itself, read at run time from <repo>/../shared/conformance.

interface CasesFile {
  valid: { selector: string; labels: Record<string, string>; match: boolean }[];
  invalid: string[];
  canonical: { selector: string; string: string; uid?: string }[];
  parse_ok: string[];
  equivalent: [string, string][];
}
interface ExtraFile {
  tokenize: { input: string; error?: boolean; tokens?: { kind: string; value?: string }[] }[];
  label_restrictions: {
    selector: string;
    restrictions: Record<string, { MustBePresent?: boolean; MustBeAbsent?: boolean; MustHaveOneOfValues?: string[] }> | null;
  }[];
  tree: { selector: string; expected: string };
}

/** The repository root: the nearest directory above this file (source or dist/) with package.json. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

const CONFORMANCE_DIR = resolve(repoRoot(), '..', 'shared', 'conformance');

function loadConformance(): { cases: CasesFile; extra: ExtraFile } | { missing: string } {
  const files = ['calico-selector-cases.json', 'calico-selector-extra-cases.json'].map((f) => join(CONFORMANCE_DIR, f));
  const absent = files.filter((f) => !existsSync(f));
  if (absent.length > 0) {
    return {
      missing:
        `Calico selector conformance data not found: ${absent.join(', ')}. ` +
        'The shared/ directory must sit beside the repository (shared/conformance/calico-selector-*.json).',
    };
  }
  const [cases, extra] = files.map((f) => JSON.parse(readFileSync(f, 'utf8')) as unknown) as [CasesFile, ExtraFile];
  return { cases, extra };
}

function parseError(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ValidationError, `expected a ValidationError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ValidationError, nothing was thrown');
}

/** Position reported in a parse error message. */
function errorPosition(err: ValidationError): number {
  const m = /^selector: .+ at position (\d+): .+$/s.exec(err.message);
  assert.ok(m, `message has no position: ${err.message}`);
  return Number(m[1]);
}

/** Restrictions in the conformance file's shape (Go field names; false/nil fields omitted). */
function asGoRestrictions(m: ReadonlyMap<string, LabelRestriction> | null): ExtraFile['label_restrictions'][number]['restrictions'] {
  if (m === null) return null;
  const out: NonNullable<ExtraFile['label_restrictions'][number]['restrictions']> = {};
  for (const [label, r] of m) {
    out[label] = {
      ...(r.mustBePresent ? { MustBePresent: true } : {}),
      ...(r.mustBeAbsent ? { MustBeAbsent: true } : {}),
      ...(r.mustHaveOneOfValues ? { MustHaveOneOfValues: [...r.mustHaveOneOfValues] } : {}),
    };
  }
  return out;
}

describe('selector: Calico conformance data', () => {
  const data = loadConformance();
  if ('missing' in data) {
    it('conformance data is present', () => assert.fail(data.missing));
    return;
  }
  const { cases, extra } = data;

  it(`valid: ${cases.valid.length} (selector, labels) pairs match as Calico says, before and after canonicalising`, () => {
    assert.ok(cases.valid.length > 0);
    const failures: string[] = [];
    for (const c of cases.valid) {
      const sel = parseSelector(c.selector);
      const again = parseSelector(sel.toString());
      if (sel.matches(c.labels) !== c.match) failures.push(`${c.selector} on ${JSON.stringify(c.labels)}: expected ${c.match}`);
      if (again.matches(c.labels) !== c.match) failures.push(`canonical ${sel.toString()} on ${JSON.stringify(c.labels)}: expected ${c.match}`);
      if (matchSelector(c.selector, c.labels) !== c.match) failures.push(`matchSelector(${c.selector})`);
      if (sel.uniqueId() !== sel.uniqueId()) failures.push(`unstable uid for ${c.selector}`);
    }
    assert.deepEqual(failures, []);
  });

  it(`invalid: ${cases.invalid.length} selectors are rejected with a ValidationError naming the position`, () => {
    assert.ok(cases.invalid.length > 0);
    for (const s of cases.invalid) {
      const err = parseError(() => parseSelector(s));
      assert.equal(err.field, 'selector', s);
      const pos = errorPosition(err);
      assert.ok(pos >= 0 && pos <= s.length, `position ${pos} outside ${JSON.stringify(s)}`);
    }
  });

  it(`canonical: ${cases.canonical.length} selectors print exactly as Calico prints them, round-trip, and give Calico's UID`, () => {
    assert.ok(cases.canonical.length > 0);
    let uids = 0;
    for (const c of cases.canonical) {
      const sel = parseSelector(c.selector);
      assert.equal(sel.toString(), c.string, c.selector);
      const again = parseSelector(sel.toString());
      assert.equal(again.toString(), c.string, `round trip of ${c.string}`);
      assert.equal(again.uniqueId(), sel.uniqueId(), `uid round trip of ${c.string}`);
      if (c.uid !== undefined) {
        assert.equal(sel.uniqueId(), c.uid, c.selector);
        uids++;
      }
    }
    assert.ok(uids > 0, 'some canonical cases carry a UID');
  });

  it(`parse_ok: ${cases.parse_ok.length} selectors parse, and their canonical form is a fixed point`, () => {
    assert.ok(cases.parse_ok.length > 0);
    for (const s of cases.parse_ok) {
      const sel = parseSelector(s);
      assert.equal(parseSelector(sel.toString()).toString(), sel.toString(), s);
    }
  });

  it(`equivalent: ${cases.equivalent.length} pairs share canonical form and UID; different pairs differ`, () => {
    assert.ok(cases.equivalent.length > 0);
    const seen = new Map<string, string>();
    for (const [a, b] of cases.equivalent) {
      const sa = parseSelector(a);
      const sb = parseSelector(b);
      assert.equal(sa.toString(), sb.toString(), `${a} vs ${b}`);
      assert.equal(sa.uniqueId(), sb.uniqueId(), `${a} vs ${b}`);
      const clash = seen.get(sa.uniqueId());
      assert.equal(clash, undefined, `${a} has the same UID as ${clash ?? ''}`);
      seen.set(sa.uniqueId(), a);
    }
  });

  it(`tokenize: ${extra.tokenize.length} inputs give Calico's tokens or fail`, () => {
    assert.ok(extra.tokenize.length > 0);
    for (const c of extra.tokenize) {
      if (c.error) {
        const err = parseError(() => tokenizeSelector(c.input));
        errorPosition(err);
        // A tokenizer error is always a parse error too.
        parseError(() => parseSelector(c.input));
        continue;
      }
      const got = tokenizeSelector(c.input).map((t) => ({ kind: t.kind, ...(t.value !== '' ? { value: t.value } : {}) }));
      const want = (c.tokens ?? []).map((t) => ({ kind: t.kind, ...(t.value ? { value: t.value } : {}) }));
      assert.deepEqual(got, want, c.input);
    }
  });

  it(`label_restrictions: ${extra.label_restrictions.length} selectors give Calico's restrictions (also under "all() && (...)")`, () => {
    assert.ok(extra.label_restrictions.length > 0);
    for (const c of extra.label_restrictions) {
      const sel = parseSelector(c.selector);
      assert.deepEqual(asGoRestrictions(sel.labelRestrictions()), c.restrictions, c.selector);
      assert.equal(sel.labelRestrictions(), sel.labelRestrictions(), 'memoised');
      if (c.selector === '') continue;
      const wrapped = `all() && (${c.selector})`;
      assert.deepEqual(asGoRestrictions(parseSelector(wrapped).labelRestrictions()), c.restrictions, wrapped);
    }
  });

  it('tree: print-tree output matches calico-selector', () => {
    assert.equal(parseSelector(extra.tree.selector).printTree(), extra.tree.expected);
  });
});

// ---------------------------------------------------------------------------------------------
// Behaviour beyond the conformance data.

describe('selector: errors', () => {
  const cases: [string, number, RegExp][] = [
    ['a == "b" && %', 12, /unexpected character "%"/],
    ['a == b', 5, /expected a quoted string after '=='/],
    ['a', 1, /found end of selector/],
    ['a b', 2, /expected an operator .* after label "a"/],
    ['label == "value', 9, /unterminated string/],
    ['a = "b"', 2, /expected '=='/],
    ['has(a) & has(b)', 7, /expected '&&'/],
    ['has( )', 5, /expected a label key in has\(\)/],
    ['has(a b)', 6, /expected '\)' to close has\(/],
    ['(a == "x"', 9, /expected '\)' to match the '\(' at position 0, found end of selector/],
    ['a in "x"', 5, /expected a set literal/],
    ['a in {"x" "y"}', 10, /expected a quoted string or '}'/],
    ['a == "x")', 8, /expected '&&', '\|\|' or end of selector, found '\)'/],
    ['a == "x"\n', 8, /unexpected character "\\n"/],
    ['()', 1, /unexpected '\)'/],
    [`${'k'.repeat(MAX_LABEL_LENGTH + 1)} == "v"`, 0, /label key longer than 512/],
  ];
  for (const [sel, pos, re] of cases) {
    it(`${JSON.stringify(sel.length > 40 ? `${sel.slice(0, 20)}…` : sel)} fails at ${pos}`, () => {
      const err = parseError(() => parseSelector(sel));
      assert.equal(err.code, 'VALIDATION');
      assert.equal(err.field, 'selector');
      assert.match(err.message, re);
      assert.equal(errorPosition(err), pos, err.message);
    });
  }

  it('shows an excerpt from the position, shortened when long', () => {
    const err = parseError(() => parseSelector(`a == "b" && % ${'x'.repeat(50)}`));
    assert.match(err.message, /at position 12: "% x{22}…"$/);
    assert.match(parseError(() => parseSelector('has(a) &&')).message, /at position 9: <end of selector>$/);
  });

  it('rejects non-strings (selectors come from JSON)', () => {
    assert.match(parseError(() => parseSelector(42 as unknown as string)).message, /selector: must be a string/);
  });

  it(`limits nesting to ${MAX_NESTING} parentheses instead of overflowing the stack`, () => {
    const ok = `${'('.repeat(MAX_NESTING)}has(a)${')'.repeat(MAX_NESTING)}`;
    assert.equal(parseSelector(ok).toString(), 'has(a)');
    const deep = `${'!('.repeat(MAX_NESTING)}has(a)${')'.repeat(MAX_NESTING)}`;
    assert.equal(parseSelector(deep).matches({ a: '' }), true, 'even number of negations');
    const bad = `${'('.repeat(MAX_NESTING + 1)}has(a)${')'.repeat(MAX_NESTING + 1)}`;
    assert.equal(errorPosition(parseError(() => parseSelector(bad))), MAX_NESTING);
  });
});

describe('selector: grammar details', () => {
  it('accepts label keys with prefixes and all of Calico\'s key characters', () => {
    const sel = parseSelector("projectcalico.org/name == 'web' && calico-ts/network == \"net1\" && has(A_b.c-9/x)");
    assert.equal(sel.toString(), '(projectcalico.org/name == "web" && calico-ts/network == "net1" && has(A_b.c-9/x))');
    assert.equal(sel.matches({ 'projectcalico.org/name': 'web', 'calico-ts/network': 'net1', 'A_b.c-9/x': '' }), true);
    assert.equal(sel.matches({ 'projectcalico.org/name': 'web', 'calico-ts/network': 'net2', 'A_b.c-9/x': '' }), false);
    assert.equal(parseSelector(`${'k'.repeat(MAX_LABEL_LENGTH)} == "v"`).matches({ ['k'.repeat(MAX_LABEL_LENGTH)]: 'v' }), true);
  });

  it('treats tabs as blanks and folds leading !s', () => {
    assert.equal(parseSelector('\ta\t==\t"b"\t').toString(), 'a == "b"');
    assert.equal(parseSelector('!!!has(a)').toString(), '!has(a)');
    assert.equal(parseSelector('!a == "b"').toString(), '!a == "b"');
    assert.equal(parseSelector('!a == "b"').matches({ a: 'c' }), true);
  });

  it('keeps Calico quirks: trailing comma in sets, empty sets, nested groups are not flattened', () => {
    assert.equal(parseSelector('a in {"x",}').toString(), 'a in {"x"}');
    assert.equal(parseSelector('a in {}').matches({ a: '' }), false);
    assert.equal(parseSelector('a not in {}').matches({}), true);
    assert.equal(parseSelector('(has(a) && has(b)) && has(c)').toString(), '((has(a) && has(b)) && has(c))');
    assert.equal(parseSelector('has(a) && has(b) || has(c)').toString(), '((has(a) && has(b)) || has(c))');
    // Parenthesised negations are not folded, so this canonical form is not a fixed point (as in Calico).
    assert.equal(parseSelector('!(!has(a))').toString(), '!!has(a)');
    assert.equal(parseSelector('!!has(a)').toString(), 'has(a)');
  });

  it('operator words only count right after a key, and need a word boundary', () => {
    assert.equal(parseSelector('in in {"in"}').toString(), 'in in {"in"}');
    assert.equal(parseSelector('a notin {"x"}').toString(), 'a not in {"x"}');
    assert.equal(parseSelector('a not   in {"x"}').toString(), 'a not in {"x"}');
    assert.equal(parseSelector('a startswith"x"').toString(), 'a starts with "x"');
    parseError(() => parseSelector('a instance {"x"}'));
    parseError(() => parseSelector('a containsx "x"'));
    // Calico's tokenizer swallows blanks after a multi-word operator before its boundary check.
    assert.deepEqual(tokenizeSelector('a in x').map((t) => t.kind), ['TokLabel', 'TokIn', 'TokLabel', 'TokEOF']);
    assert.match(parseError(() => tokenizeSelector('a not in x')).message, /after label "a" at position 2/);
    assert.deepEqual(tokenizeSelector(' has( k ) ').map((t) => [t.kind, t.value, t.pos]), [['TokHas', 'k', 1], ['TokEOF', '', 10]]);
  });

  it('sorts set values in byte order, like Go', () => {
    const sel = parseSelector('a in {"\u{1F600}", "\uFF01", "b", "B", "\u00e9", "b"}');
    assert.equal(sel.toString(), 'a in {"B", "b", "\u00e9", "\uFF01", "\u{1F600}"}');
    assert.ok(compareCodePoints('\uFF01', '\u{1F600}') < 0);
    assert.ok(compareCodePoints('ab', 'a') > 0);
  });

  it('quotes values containing a double quote with single quotes', () => {
    assert.equal(parseSelector(`a in {'x"y', "z"}`).toString(), `a in {'x"y', "z"}`);
    assert.equal(parseSelector(`a != 'x"y'`).toString(), `a != 'x"y'`);
  });

  it('treats an empty or blank selector as all()', () => {
    for (const s of ['', '   ', '\t']) {
      assert.equal(parseSelector(s).toString(), 'all()');
      assert.equal(parseSelector(s).matches({}), true);
    }
  });

  it('uses own label properties only', () => {
    const sel = parseSelector('has(constructor) || has(__proto__) || toString == "x" || hasOwnProperty in {"y"}');
    assert.equal(sel.matches({}), false);
    assert.equal(sel.matches(Object.create(null) as Record<string, string>), false);
    assert.equal(sel.matches(JSON.parse('{"__proto__": "v"}') as Record<string, string>), true);
    assert.equal(sel.matches({ toString: 'x' }), true);
    assert.equal(parseSelector('constructor != "x"').matches({}), true);
    assert.equal(parseSelector('constructor not in {"x"}').matches({ constructor: 'x' }), false);
  });

  it('covers every operator on present and absent labels', () => {
    const l = { a: 'hello', n: '' };
    const expect: [string, boolean][] = [
      ['a == "hello"', true],
      ['a != "hello"', false],
      ['z != "hello"', true],
      ['a contains "ell"', true],
      ['z contains ""', false],
      ['n contains ""', true],
      ['a starts with "he"', true],
      ['a ends with "lo"', true],
      ['a ends with "he"', false],
      ['a in {"x", "hello"}', true],
      ['a in {"1", "2", "3", "4", "5", "6", "7", "8", "9", "hello"}', true],
      ['a in {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}', false],
      ['a not in {"1", "2", "3", "4", "5", "6", "7", "8", "9", "hello"}', false],
      ['z not in {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}', true],
      ['has(n)', true],
      ['!has(z)', true],
      ['global() && all()', true],
      ['has(a) && has(n) && has(z)', false],
      ['has(z) || has(y) || has(a)', true],
      ['has(z) || has(y) || has(x) || has(w)', false],
      ['has(a) && has(n) && has(a) && !has(z)', true],
    ];
    for (const [s, want] of expect) assert.equal(parseSelector(s).matches(l), want, s);
  });

  it('exposes a frozen tree', () => {
    const sel = parseSelector('a in {"y", "x"} && !has(b)');
    assert.deepEqual(sel.root, {
      kind: 'and',
      operands: [
        { kind: 'in', label: 'a', values: ['x', 'y'] },
        { kind: 'not', operand: { kind: 'has', label: 'b' } },
      ],
    });
    assert.ok(Object.isFrozen(sel.root));
  });

  it('prints trees with Go-style quoting', () => {
    assert.equal(parseSelector(`!(a == 'x"y' || b not in {"2", "1"})`).printTree(), 'NOT\n+-OR\n  +-(a == "x\\"y")\n  +-(b not in {1,2})\n');
  });
});

describe('selector: cache and speed', () => {
  it('returns the same Selector for the same text and bounds the cache', () => {
    clearSelectorCache();
    const a = parseSelector('has(a)');
    assert.equal(parseSelector('has(a)'), a);
    for (let i = 0; i < SELECTOR_CACHE_SIZE + 10; i++) parseSelector(`k${i} == "v"`);
    assert.equal(selectorCacheSize(), SELECTOR_CACHE_SIZE);
    assert.notEqual(parseSelector('has(a)'), a, 'least recently used entry was dropped');
    assert.equal(parseSelector('has(a)').toString(), a.toString());
    clearSelectorCache();
    assert.equal(selectorCacheSize(), 0);
  });

  it('evaluates a mid-size selector 100k times (micro-check, no timing assertion)', () => {
    const sel = parseSelector(
      "calico-ts/network == 'net1' && role in {'web', 'api', 'db'} && !has(quarantine) && " +
        "(tier != 'legacy' || projectcalico.org/name starts with 'prod-') && zone not in {'z9'}",
    );
    const labelSets: Record<string, string>[] = [
      { 'calico-ts/network': 'net1', role: 'web', tier: 'front', zone: 'z1' },
      { 'calico-ts/network': 'net1', role: 'db', tier: 'legacy', 'projectcalico.org/name': 'prod-db' },
      { 'calico-ts/network': 'net2', role: 'web' },
      { 'calico-ts/network': 'net1', role: 'api', quarantine: 'yes' },
    ];
    let hits = 0;
    const start = process.hrtime.bigint();
    for (let i = 0; i < 100_000; i++) if (sel.matches(labelSets[i & 3]!)) hits++;
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    assert.equal(hits, 50_000);
    console.log(`# 100k selector evaluations: ${ms.toFixed(1)} ms`);
  });
});
