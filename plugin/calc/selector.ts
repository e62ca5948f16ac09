/**
 * Calico's label-selector language: tokenizer, parser, canonical printer, unique ID and a compiled
 * evaluator. Pure (no I/O); behaviour follows projectcalico/calico libcalico-go/lib/selector and is
 * pinned by the conformance data in shared/conformance (see test/unit/selector.test.ts).
 *
 *   sel   := or
 *   or    := and ('||' and)*
 *   and   := op ('&&' op)*
 *   op    := '!'* ( '(' or ')' | has(key) | all() | global()
 *                 | key ('==' | '!=' | contains | starts with | ends with) str
 *                 | key (in | not in) '{' [str (',' str)* [',']] '}' )
 *   str   := "..." | '...'          (no escapes; a literal cannot contain its own quote)
 *   key   := [a-zA-Z0-9_./-]{1,512}
 *
 * Calico's rules kept exactly, because they decide canonical strings and therefore unique IDs:
 * - whitespace is only space and tab (a newline is an error);
 * - an empty or blank selector is `all()`;
 * - leading `!`s fold into one (`!!has(a)` is `has(a)`), and `!` binds tighter than `==`:
 *   `!a == "b"` means `!(a == "b")`;
 * - operator words are only recognised right after a key (`contains contains "x"` is valid),
 *   `startswith`/`endswith`/`notin` are accepted, `starts  with` too;
 * - `&&`/`||` chains print parenthesised; parentheses in the input leave no trace;
 * - set values are de-duplicated and sorted (byte order); values print in double quotes unless they
 *   contain one;
 * - a trailing comma in a set literal is accepted: `a in {"x",}`.
 */
import { createHash } from 'node:crypto';
import { ValidationError } from '../lib/errors.js';

/** Labels are a plain string map. Only own properties count; an `undefined` value counts as absent. */
export type Labels = Readonly<Record<string, string>>;

export interface Selector {
  /** True when the labels satisfy the selector. Compiled once, cheap to call. */
  matches(labels: Labels): boolean;
  /** Canonical form, byte-for-byte as Calico prints it (Selector.String()). */
  toString(): string;
  /** Calico's UniqueID(): `s:` + base64url(SHA-224(`s:` + canonical)), 38 characters after `s:`. */
  uniqueId(): string;
  /** The parsed tree, for later translation (e.g. to ipsets). Immutable. */
  readonly root: SelectorNode;
  /**
   * Lower bounds on labels any match must have (Calico's LabelRestrictions), or null when the
   * selector restricts nothing. `mustHaveOneOfValues: []` means the selector can never match.
   */
  labelRestrictions(): ReadonlyMap<string, LabelRestriction> | null;
  /** The tree as Calico's `calico-selector print-tree` shows it (debugging aid). */
  printTree(): string;
}

export type SelectorNode =
  | { readonly kind: 'all' }
  | { readonly kind: 'global' }
  | { readonly kind: 'has'; readonly label: string }
  | {
      readonly kind: 'eq' | 'ne' | 'contains' | 'startsWith' | 'endsWith';
      readonly label: string;
      readonly value: string;
    }
  /** `values` is de-duplicated and sorted. */
  | { readonly kind: 'in' | 'notIn'; readonly label: string; readonly values: readonly string[] }
  | { readonly kind: 'not'; readonly operand: SelectorNode }
  /** Always two or more operands. */
  | { readonly kind: 'and' | 'or'; readonly operands: readonly SelectorNode[] };

export interface LabelRestriction {
  readonly mustBePresent: boolean;
  readonly mustBeAbsent: boolean;
  /** null: any value; otherwise the label must take one of these (sorted) values. */
  readonly mustHaveOneOfValues: readonly string[] | null;
}

export type SelectorTokenKind =
  | 'TokLabel'
  | 'TokStringLiteral'
  | 'TokLBrace'
  | 'TokRBrace'
  | 'TokComma'
  | 'TokEq'
  | 'TokNe'
  | 'TokIn'
  | 'TokNot'
  | 'TokNotIn'
  | 'TokContains'
  | 'TokStartsWith'
  | 'TokEndsWith'
  | 'TokAll'
  | 'TokHas'
  | 'TokLParen'
  | 'TokRParen'
  | 'TokAnd'
  | 'TokOr'
  | 'TokGlobal'
  | 'TokEOF';

export interface SelectorToken {
  readonly kind: SelectorTokenKind;
  /** Label name (TokLabel, TokHas) or string contents (TokStringLiteral); '' otherwise. */
  readonly value: string;
  /** Offset of the token's first character in the input (the input length for TokEOF). */
  readonly pos: number;
}

/** Longest label key Calico accepts. */
export const MAX_LABEL_LENGTH = 512;
/**
 * Deepest parenthesis nesting accepted. Calico has no limit (Go stacks grow); ours guards the JS
 * stack so a hostile selector fails with a ValidationError instead of a RangeError.
 */
export const MAX_NESTING = 1000;
/** Parsed selectors kept for reuse (least recently used dropped first). */
export const SELECTOR_CACHE_SIZE = 1024;

// ---------------------------------------------------------------------------------------------
// Errors

const EXCERPT_LENGTH = 24;

function fail(text: string, pos: number, reason: string): never {
  const rest = text.slice(pos);
  const excerpt =
    rest.length === 0
      ? '<end of selector>'
      : JSON.stringify(rest.length > EXCERPT_LENGTH ? `${rest.slice(0, EXCERPT_LENGTH)}…` : rest);
  throw new ValidationError('selector', `${reason} at position ${pos}: ${excerpt}`);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

function isKeyChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x5f || // _
    c === 0x2e || // .
    c === 0x2f || // /
    c === 0x2d // -
  );
}

function skipSpace(text: string, i: number): number {
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09) break;
    i++;
  }
  return i;
}

/** End of the label key starting at `i` (== i when there is none); rejects over-long keys. */
function keyEnd(text: string, i: number): number {
  let j = i;
  while (j < text.length && isKeyChar(text.charCodeAt(j))) j++;
  if (j - i > MAX_LABEL_LENGTH) fail(text, i, `label key longer than ${MAX_LABEL_LENGTH} characters`);
  return j;
}

/**
 * Match an operator word ("in") or words separated by optional blanks ("starts with",
 * "startswith"), ending at a word boundary. Returns the index after the match, or -1.
 *
 * As in Calico, a multi-word operator also swallows the blanks after its last word before the
 * boundary check, so `a not in x` fails here while `a in x` only fails in the parser.
 */
function matchWords(text: string, i: number, words: readonly string[]): number {
  let j = i;
  for (const w of words) {
    if (!text.startsWith(w, j)) return -1;
    j += w.length;
    if (words.length > 1) j = skipSpace(text, j);
  }
  return j < text.length && isKeyChar(text.charCodeAt(j)) ? -1 : j;
}

const OPERATOR_WORDS: readonly (readonly [SelectorTokenKind, readonly string[]])[] = [
  ['TokContains', ['contains']],
  ['TokStartsWith', ['starts', 'with']],
  ['TokEndsWith', ['ends', 'with']],
  ['TokNotIn', ['not', 'in']],
  ['TokIn', ['in']],
];

const OPERATOR_LIST = '==, !=, in, not in, contains, starts with or ends with';

/** Split a selector into Calico's tokens. Throws ValidationError('selector', ...) on bad input. */
export function tokenizeSelector(text: string): SelectorToken[] {
  const tokens: SelectorToken[] = [];
  const push = (kind: SelectorTokenKind, pos: number, value = ''): void => {
    tokens.push({ kind, value, pos });
  };
  let i = 0;
  for (;;) {
    i = skipSpace(text, i);
    if (i >= text.length) {
      push('TokEOF', text.length);
      return tokens;
    }
    const start = i;
    const c = text[i];
    switch (c) {
      case '(':
        push('TokLParen', start);
        i++;
        break;
      case ')':
        push('TokRParen', start);
        i++;
        break;
      case '{':
        push('TokLBrace', start);
        i++;
        break;
      case '}':
        push('TokRBrace', start);
        i++;
        break;
      case ',':
        push('TokComma', start);
        i++;
        break;
      case '"':
      case "'": {
        const end = text.indexOf(c, i + 1);
        if (end < 0) fail(text, start, `unterminated string (no closing ${c})`);
        push('TokStringLiteral', start, text.slice(i + 1, end));
        i = end + 1;
        break;
      }
      case '=':
        if (text[i + 1] !== '=') fail(text, start, "expected '==' ('=' alone is not an operator)");
        push('TokEq', start);
        i += 2;
        break;
      case '!':
        if (text[i + 1] === '=') {
          push('TokNe', start);
          i += 2;
        } else {
          push('TokNot', start);
          i++;
        }
        break;
      case '&':
        if (text[i + 1] !== '&') fail(text, start, "expected '&&'");
        push('TokAnd', start);
        i += 2;
        break;
      case '|':
        if (text[i + 1] !== '|') fail(text, start, "expected '||'");
        push('TokOr', start);
        i += 2;
        break;
      default: {
        const last = tokens[tokens.length - 1];
        if (last?.kind === 'TokLabel') {
          // Right after a key only an operator word may follow.
          let next = -1;
          for (const [kind, words] of OPERATOR_WORDS) {
            next = matchWords(text, i, words);
            if (next >= 0) {
              push(kind, start);
              break;
            }
          }
          if (next < 0) fail(text, start, `expected an operator (${OPERATOR_LIST}) after label ${JSON.stringify(last.value)}`);
          i = next;
        } else if (text.startsWith('has(', i)) {
          const keyStart = skipSpace(text, i + 4);
          const end = keyEnd(text, keyStart);
          if (end === keyStart) fail(text, keyStart, 'expected a label key in has()');
          const close = skipSpace(text, end);
          if (text[close] !== ')') fail(text, close, "expected ')' to close has(");
          push('TokHas', start, text.slice(keyStart, end));
          i = close + 1;
        } else if (text.startsWith('all(', i) || text.startsWith('global(', i)) {
          const isAll = text.startsWith('all(', i);
          const close = skipSpace(text, i + (isAll ? 4 : 7));
          if (text[close] !== ')') fail(text, close, `expected ')' to close ${isAll ? 'all(' : 'global('}`);
          push(isAll ? 'TokAll' : 'TokGlobal', start);
          i = close + 1;
        } else {
          const end = keyEnd(text, i);
          if (end === i) fail(text, start, `unexpected character ${JSON.stringify(String.fromCodePoint(text.codePointAt(i) ?? 0))}`);
          push('TokLabel', start, text.slice(i, end));
          i = end;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Parser

const VALUE_OPS: Partial<Record<SelectorTokenKind, 'eq' | 'ne' | 'contains' | 'startsWith' | 'endsWith'>> = {
  TokEq: 'eq',
  TokNe: 'ne',
  TokContains: 'contains',
  TokStartsWith: 'startsWith',
  TokEndsWith: 'endsWith',
};

const TOKEN_TEXT: Partial<Record<SelectorTokenKind, string>> = {
  TokLBrace: "'{'",
  TokRBrace: "'}'",
  TokComma: "','",
  TokEq: "'=='",
  TokNe: "'!='",
  TokIn: "'in'",
  TokNot: "'!'",
  TokNotIn: "'not in'",
  TokContains: "'contains'",
  TokStartsWith: "'starts with'",
  TokEndsWith: "'ends with'",
  TokAll: 'all()',
  TokGlobal: 'global()',
  TokLParen: "'('",
  TokRParen: "')'",
  TokAnd: "'&&'",
  TokOr: "'||'",
  TokEOF: 'end of selector',
};

function describe(t: SelectorToken): string {
  switch (t.kind) {
    case 'TokLabel':
      return `label ${JSON.stringify(t.value)}`;
    case 'TokStringLiteral':
      return `string ${JSON.stringify(t.value)}`;
    case 'TokHas':
      return `has(${t.value})`;
    default:
      return TOKEN_TEXT[t.kind] ?? t.kind;
  }
}

/** Compare by code point, i.e. UTF-8 byte order, as Go sorts strings. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (astral code points) sort above U+E000..U+FFFF in code point order.
    if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

function sortedSet(values: readonly string[]): string[] {
  return [...new Set(values)].sort(compareCodePoints);
}

class Parser {
  private i = 0;
  private depth = 0;

  constructor(
    private readonly text: string,
    private readonly tokens: readonly SelectorToken[],
  ) {}

  private peek(offset = 0): SelectorToken {
    // The token list always ends with TokEOF and the parser never reads past it.
    return this.tokens[Math.min(this.i + offset, this.tokens.length - 1)]!;
  }

  private fail(t: SelectorToken, reason: string): never {
    return fail(this.text, t.pos, reason);
  }

  parseRoot(): SelectorNode {
    if (this.peek().kind === 'TokEOF') return { kind: 'all' };
    const node = this.parseOr();
    const t = this.peek();
    if (t.kind !== 'TokEOF') this.fail(t, `expected '&&', '||' or end of selector, found ${describe(t)}`);
    return node;
  }

  private parseOr(): SelectorNode {
    const operands = [this.parseAnd()];
    while (this.peek().kind === 'TokOr') {
      this.i++;
      operands.push(this.parseAnd());
    }
    return operands.length === 1 ? operands[0]! : { kind: 'or', operands };
  }

  private parseAnd(): SelectorNode {
    const operands = [this.parseOperation()];
    while (this.peek().kind === 'TokAnd') {
      this.i++;
      operands.push(this.parseOperation());
    }
    return operands.length === 1 ? operands[0]! : { kind: 'and', operands };
  }

  private parseOperation(): SelectorNode {
    let negated = false;
    while (this.peek().kind === 'TokNot') {
      negated = !negated;
      this.i++;
    }
    const node = this.parseTerm();
    return negated ? { kind: 'not', operand: node } : node;
  }

  private parseTerm(): SelectorNode {
    const t = this.peek();
    switch (t.kind) {
      case 'TokHas':
        this.i++;
        return { kind: 'has', label: t.value };
      case 'TokAll':
        this.i++;
        return { kind: 'all' };
      case 'TokGlobal':
        this.i++;
        return { kind: 'global' };
      case 'TokLParen': {
        if (++this.depth > MAX_NESTING) this.fail(t, `parentheses nested more than ${MAX_NESTING} deep`);
        this.i++;
        const node = this.parseOr();
        const close = this.peek();
        if (close.kind !== 'TokRParen') this.fail(close, `expected ')' to match the '(' at position ${t.pos}, found ${describe(close)}`);
        this.i++;
        this.depth--;
        return node;
      }
      case 'TokLabel':
        return this.parseComparison(t);
      default:
        return this.fail(t, `unexpected ${describe(t)}, expected a label, has(), all(), global(), '!' or '('`);
    }
  }

  private parseComparison(labelTok: SelectorToken): SelectorNode {
    const label = labelTok.value;
    const op = this.peek(1);
    const arg = this.peek(2);
    const valueOp = VALUE_OPS[op.kind];
    if (valueOp) {
      if (arg.kind !== 'TokStringLiteral') this.fail(arg, `expected a quoted string after ${describe(op)}, found ${describe(arg)}`);
      this.i += 3;
      return { kind: valueOp, label, value: arg.value };
    }
    if (op.kind === 'TokIn' || op.kind === 'TokNotIn') {
      if (arg.kind !== 'TokLBrace') this.fail(arg, `expected a set literal {"...", ...} after ${describe(op)}, found ${describe(arg)}`);
      this.i += 3;
      const values: string[] = [];
      while (this.peek().kind === 'TokStringLiteral') {
        values.push(this.peek().value);
        this.i++;
        if (this.peek().kind !== 'TokComma') break;
        this.i++;
      }
      const close = this.peek();
      if (close.kind !== 'TokRBrace') this.fail(close, `expected a quoted string or '}' in set literal, found ${describe(close)}`);
      this.i++;
      return { kind: op.kind === 'TokIn' ? 'in' : 'notIn', label, values: sortedSet(values) };
    }
    return this.fail(op, `expected an operator (${OPERATOR_LIST}) after label ${JSON.stringify(label)}, found ${describe(op)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Canonical form (Calico's collectFragments)

function quote(s: string): string {
  return s.includes('"') ? `'${s}'` : `"${s}"`;
}

const OP_TEXT = { eq: ' == ', ne: ' != ', contains: ' contains ', startsWith: ' starts with ', endsWith: ' ends with ' } as const;

function canonical(n: SelectorNode): string {
  switch (n.kind) {
    case 'all':
      return 'all()';
    case 'global':
      return 'global()';
    case 'has':
      return `has(${n.label})`;
    case 'eq':
    case 'ne':
    case 'contains':
    case 'startsWith':
    case 'endsWith':
      return n.label + OP_TEXT[n.kind] + quote(n.value);
    case 'in':
    case 'notIn':
      return `${n.label} ${n.kind === 'in' ? 'in' : 'not in'} {${n.values.map(quote).join(', ')}}`;
    case 'not':
      return `!${canonical(n.operand)}`;
    case 'and':
    case 'or':
      return `(${n.operands.map(canonical).join(n.kind === 'and' ? ' && ' : ' || ')})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluation: compiled to closures once per selector.

type Matcher = (labels: Labels) => boolean;

const TRUE: Matcher = () => true;
/** Sets this small are faster to scan than to hash. */
const SMALL_SET = 8;

function compile(n: SelectorNode): Matcher {
  switch (n.kind) {
    case 'all':
    case 'global':
      return TRUE;
    case 'not': {
      const f = compile(n.operand);
      return (l) => !f(l);
    }
    case 'and':
    case 'or': {
      const fs = n.operands.map(compile);
      const [a, b, c] = fs as [Matcher, Matcher, Matcher | undefined];
      if (n.kind === 'and') {
        if (fs.length === 2) return (l) => a(l) && b(l);
        if (fs.length === 3) return (l) => a(l) && b(l) && c!(l);
        return (l) => {
          for (const f of fs) if (!f(l)) return false;
          return true;
        };
      }
      if (fs.length === 2) return (l) => a(l) || b(l);
      if (fs.length === 3) return (l) => a(l) || b(l) || c!(l);
      return (l) => {
        for (const f of fs) if (f(l)) return true;
        return false;
      };
    }
    default:
      return compileLeaf(n);
  }
}

function compileLeaf(n: Exclude<SelectorNode, { kind: 'all' | 'global' | 'not' | 'and' | 'or' }>): Matcher {
  const key = n.label;
  // Keys such as "constructor" or "__proto__" are inherited by every plain object: check ownership.
  // Everything else reads the property directly (undefined = absent), the fast path.
  const get: (l: Labels) => string | undefined =
    key in Object.prototype ? (l) => (Object.hasOwn(l, key) ? l[key] : undefined) : (l) => l[key];
  switch (n.kind) {
    case 'has':
      return (l) => get(l) !== undefined;
    case 'eq': {
      const v = n.value;
      return (l) => get(l) === v;
    }
    case 'ne': {
      const v = n.value;
      return (l) => get(l) !== v;
    }
    case 'contains': {
      const v = n.value;
      return (l) => get(l)?.includes(v) ?? false;
    }
    case 'startsWith': {
      const v = n.value;
      return (l) => get(l)?.startsWith(v) ?? false;
    }
    case 'endsWith': {
      const v = n.value;
      return (l) => get(l)?.endsWith(v) ?? false;
    }
    case 'in':
    case 'notIn': {
      const inSet = n.kind === 'in';
      if (n.values.length === 0) return inSet ? () => false : TRUE;
      let member: (v: string) => boolean;
      if (n.values.length === 1) {
        const only = n.values[0]!;
        member = (v) => v === only;
      } else if (n.values.length <= SMALL_SET) {
        const arr = n.values;
        member = (v) => arr.includes(v);
      } else {
        const set = new Set(n.values);
        member = (v) => set.has(v);
      }
      return inSet
        ? (l) => {
            const v = get(l);
            return v !== undefined && member(v);
          }
        : (l) => {
            const v = get(l);
            return v === undefined || !member(v);
          };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Label restrictions (Calico's Node.LabelRestrictions)

interface MutableRestriction {
  mustBePresent: boolean;
  mustBeAbsent: boolean;
  mustHaveOneOfValues: string[] | null;
}
type RestrictionMap = Map<string, MutableRestriction>;

function restriction(present: boolean, absent: boolean, values: string[] | null): MutableRestriction {
  return { mustBePresent: present, mustBeAbsent: absent, mustHaveOneOfValues: values };
}

function restrictions(n: SelectorNode): RestrictionMap | null {
  switch (n.kind) {
    case 'all':
    case 'global':
    case 'ne':
    case 'notIn':
      return null;
    case 'eq':
      return new Map([[n.label, restriction(true, false, [n.value])]]);
    case 'in':
      return new Map([[n.label, restriction(true, false, [...n.values])]]);
    case 'has':
    case 'contains':
    case 'startsWith':
    case 'endsWith':
      return new Map([[n.label, restriction(true, false, null)]]);
    case 'not':
      // Only !has(x) inverts usefully: !(a == "b") does not require a to be absent.
      return n.operand.kind === 'has' ? new Map([[n.operand.label, restriction(false, true, null)]]) : null;
    case 'and': {
      const out: RestrictionMap = new Map();
      for (const op of n.operands) {
        for (const [label, r] of restrictions(op) ?? []) {
          const base = out.get(label) ?? restriction(false, false, null);
          base.mustBePresent ||= r.mustBePresent;
          base.mustBeAbsent ||= r.mustBeAbsent;
          if (base.mustHaveOneOfValues === null) base.mustHaveOneOfValues = r.mustHaveOneOfValues;
          else if (r.mustHaveOneOfValues !== null) {
            const other = new Set(r.mustHaveOneOfValues);
            base.mustHaveOneOfValues = base.mustHaveOneOfValues.filter((v) => other.has(v));
          }
          out.set(label, base);
        }
      }
      return out.size === 0 ? null : out;
    }
    case 'or': {
      const out = restrictions(n.operands[0]!);
      if (out === null) return null;
      for (const op of n.operands.slice(1)) {
        const other = restrictions(op);
        for (const [label, r] of out) {
          const o = other?.get(label) ?? restriction(false, false, null);
          r.mustBePresent &&= o.mustBePresent;
          if (!r.mustBePresent || r.mustHaveOneOfValues === null || o.mustHaveOneOfValues === null) {
            // Either side accepts any value (or none is required): no value restriction survives.
            r.mustHaveOneOfValues = null;
          } else {
            r.mustHaveOneOfValues = [...new Set([...r.mustHaveOneOfValues, ...o.mustHaveOneOfValues])];
          }
          r.mustBeAbsent &&= o.mustBeAbsent;
          if (!r.mustBePresent && !r.mustBeAbsent) out.delete(label);
        }
      }
      return out.size === 0 ? null : out;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tree printer (Calico's hack/cmd/calico-selector print-tree)

/** Go's %q for a string (strconv.Quote), close enough for a debugging aid. */
function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        continue;
      case '\\':
        out += '\\\\';
        continue;
      case '\x07':
        out += '\\a';
        continue;
      case '\b':
        out += '\\b';
        continue;
      case '\f':
        out += '\\f';
        continue;
      case '\n':
        out += '\\n';
        continue;
      case '\r':
        out += '\\r';
        continue;
      case '\t':
        out += '\\t';
        continue;
      case '\v':
        out += '\\v';
        continue;
    }
    if (ch === ' ' || /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(ch)) out += ch;
    else if (cp < 0x80) out += `\\x${cp.toString(16).padStart(2, '0')}`;
    else if (cp <= 0xffff) out += `\\u${cp.toString(16).padStart(4, '0')}`;
    else out += `\\U${cp.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

const TREE_OP = { eq: '==', ne: '!=', contains: 'contains', startsWith: 'starts with', endsWith: 'ends with' } as const;

function printTree(n: SelectorNode, indent: string, moreSiblings: boolean, out: string[]): void {
  const childIndent = `${indent.replaceAll('-', ' ').replaceAll('+', moreSiblings ? '|' : ' ')}+-`;
  const line = (s: string): void => {
    out.push(`${indent}${s}\n`);
  };
  switch (n.kind) {
    case 'all':
      return line('all()');
    case 'global':
      return line('global()');
    case 'has':
      return line(`has(${n.label})`);
    case 'eq':
    case 'ne':
    case 'contains':
    case 'startsWith':
    case 'endsWith':
      return line(`(${n.label} ${TREE_OP[n.kind]} ${goQuote(n.value)})`);
    case 'in':
    case 'notIn':
      return line(`(${n.label} ${n.kind === 'in' ? 'in' : 'not in'} {${n.values.join(',')}})`);
    case 'not':
      line('NOT');
      return printTree(n.operand, childIndent, false, out);
    case 'and':
    case 'or':
      line(n.kind === 'and' ? 'AND' : 'OR');
      n.operands.forEach((op, i) => printTree(op, childIndent, i < n.operands.length - 1, out));
  }
}

// ---------------------------------------------------------------------------------------------
// Selector objects and the cache

function freezeRestrictions(m: RestrictionMap | null): ReadonlyMap<string, LabelRestriction> | null {
  if (m === null) return null;
  const out = new Map<string, LabelRestriction>();
  for (const [label, r] of [...m].sort(([a], [b]) => compareCodePoints(a, b))) {
    out.set(
      label,
      Object.freeze({
        mustBePresent: r.mustBePresent,
        mustBeAbsent: r.mustBeAbsent,
        mustHaveOneOfValues: r.mustHaveOneOfValues && Object.freeze([...r.mustHaveOneOfValues].sort(compareCodePoints)),
      }),
    );
  }
  return out;
}

function deepFreeze(n: SelectorNode): SelectorNode {
  if (n.kind === 'not') deepFreeze(n.operand);
  if (n.kind === 'and' || n.kind === 'or') {
    n.operands.forEach(deepFreeze);
    Object.freeze(n.operands);
  }
  if (n.kind === 'in' || n.kind === 'notIn') Object.freeze(n.values);
  return Object.freeze(n);
}

class CompiledSelector implements Selector {
  readonly matches: (labels: Labels) => boolean;
  private readonly canonical: string;
  private uid: string | undefined;
  private restrictionsMemo: ReadonlyMap<string, LabelRestriction> | null | undefined;

  constructor(readonly root: SelectorNode) {
    this.canonical = canonical(root);
    this.matches = compile(root);
  }

  toString(): string {
    return this.canonical;
  }

  uniqueId(): string {
    this.uid ??= `s:${createHash('sha224').update(`s:${this.canonical}`).digest('base64url')}`;
    return this.uid;
  }

  labelRestrictions(): ReadonlyMap<string, LabelRestriction> | null {
    if (this.restrictionsMemo === undefined) this.restrictionsMemo = freezeRestrictions(restrictions(this.root));
    return this.restrictionsMemo;
  }

  printTree(): string {
    const out: string[] = [];
    printTree(this.root, '', false, out);
    return out.join('');
  }
}

const cache = new Map<string, Selector>();

/**
 * Parse a selector (cached: the same text returns the same immutable Selector). Throws
 * ValidationError('selector', '<reason> at position N: <excerpt>'), N being the 0-based offset of
 * the problem in `text`.
 */
export function parseSelector(text: string): Selector {
  if (typeof text !== 'string') throw new ValidationError('selector', 'must be a string');
  const hit = cache.get(text);
  if (hit) {
    cache.delete(text);
    cache.set(text, hit);
    return hit;
  }
  const root = deepFreeze(new Parser(text, tokenizeSelector(text)).parseRoot());
  const sel = new CompiledSelector(root);
  cache.set(text, sel);
  if (cache.size > SELECTOR_CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return sel;
}

/** Parse (cached) and evaluate in one call. Throws like parseSelector on a bad selector. */
export function matchSelector(text: string, labels: Labels): boolean {
  return parseSelector(text).matches(labels);
}

/** For tests and long-running processes that want the memory back. */
export function clearSelectorCache(): void {
  cache.clear();
}

export function selectorCacheSize(): number {
  return cache.size;
}
