/**
 * `apply | create | replace | delete | get`, written once over the resource registry. Every document of
 * a command is parsed and validated before anything is written: one bad document changes nothing.
 */
import { parseAllDocuments } from 'yaml';
import type { Datastore } from '../datastore/datastore.js';
import { AlreadyExistsError, NotFoundError, ValidationError } from '../lib/errors.js';
import { parseSelector } from '../calc/selector.js';
import { API_VERSION, kindByName, resourceKinds, type ResourceDoc, type ResourceKind } from './resources.js';
import { convertV1Document, isV1PolicyDocument, v3Yaml } from './resources-policy.js';
import { renderTable } from './table.js';
import { stringify } from 'yaml';

export type Verb = 'apply' | 'create' | 'replace' | 'delete';
export type OutputFormat = 'table' | 'wide' | 'yaml' | 'json';

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const NAME_HINT = 'lower-case letters, digits, - and . (no spaces or shell characters)';
/** Namespaces are DNS labels, as in Kubernetes. */
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
export const DEFAULT_NAMESPACE = 'default';

export interface ParsedDoc {
  kind: ResourceKind<unknown>;
  doc: ResourceDoc;
  at: string;
  /** Set when the document was a Calico v1 one, converted: the line to tell the user. */
  converted?: string;
}

export interface GetOptions {
  /** Namespaced kinds: the namespace to read (default "default"). */
  namespace?: string;
  /** Namespaced kinds: every namespace (adds a NAMESPACE column to tables). */
  allNamespaces?: boolean;
  /** A Calico selector the listed resources' labels must match (kinds with selectorLabels). */
  selector?: string;
}

/** Parses YAML (one or many documents) or JSON (an object, an array, or a `List`). */
export function parseResourceText(text: string, source: string): ParsedDoc[] {
  let raw: unknown[];
  try {
    const docs = parseAllDocuments(text);
    raw = [];
    for (const d of docs) {
      if (d.errors.length > 0) throw new ValidationError(source, `not valid YAML or JSON: ${d.errors[0]?.message ?? ''}`.trim());
      const v: unknown = d.toJS();
      if (v !== null && v !== undefined) raw.push(v);
    }
  } catch (err) {
    if (err instanceof ValidationError) throw err;
    throw new ValidationError(source, `not valid YAML or JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const flat: unknown[] = [];
  for (const v of raw) {
    if (Array.isArray(v)) flat.push(...v);
    else if (v && typeof v === 'object' && (v as { kind?: unknown }).kind === 'List') flat.push(...(((v as { items?: unknown[] }).items) ?? []));
    else flat.push(v);
  }
  if (flat.length === 0) throw new ValidationError(source, 'contains no resources');
  return flat.map((v, i) => toParsed(v, flat.length > 1 ? `${source}[${i}]` : source));
}

function toParsed(v: unknown, at: string): ParsedDoc {
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ValidationError(at, 'each resource must be a mapping with apiVersion, kind, metadata and spec');
  let d = v as Record<string, unknown>;
  let converted: string | undefined;
  if (isV1PolicyDocument(d)) {
    const c = convertV1Document(d, at);
    d = c.doc;
    converted = c.note;
  }
  const kindName = typeof d.kind === 'string' ? d.kind : '';
  const kind = kindByName(kindName);
  if (!kind || kind.kind !== kindName) {
    throw new ValidationError(`${at}.kind`, `${JSON.stringify(d.kind)} is not a supported kind (${resourceKinds().map((k) => k.kind).join(', ')})`);
  }
  if (d.apiVersion !== API_VERSION) {
    const hint = d.apiVersion === 'v1' ? '; calico v1 documents are not accepted, write the projectcalico.org/v3 form' : '';
    throw new ValidationError(`${at}.apiVersion`, `must be ${API_VERSION}${hint}`);
  }
  const metadata = { ...((d.metadata ?? {}) as ResourceDoc['metadata']) };
  const namePattern = kind.namePattern ?? { re: NAME, hint: NAME_HINT };
  if (typeof metadata !== 'object' || typeof metadata.name !== 'string' || !namePattern.re.test(metadata.name)) {
    throw new ValidationError(`${at}.metadata.name`, `is required: ${namePattern.hint}`);
  }
  if (kind.namespaced) metadata.namespace = checkNamespace(metadata.namespace ?? DEFAULT_NAMESPACE, `${at}.metadata.namespace`);
  const spec = d.spec ?? {};
  if (typeof spec !== 'object' || Array.isArray(spec)) throw new ValidationError(`${at}.spec`, 'must be a mapping');
  return { kind, doc: { apiVersion: API_VERSION, kind: kindName, metadata, spec: spec as Record<string, unknown> }, at, ...(converted ? { converted } : {}) };
}

function checkNamespace(ns: unknown, at: string): string {
  if (typeof ns !== 'string' || !NAMESPACE.test(ns)) throw new ValidationError(at, 'must be a namespace name: lower-case letters, digits and -');
  return ns;
}

const keyOf = (kind: ResourceKind<unknown>, doc: ResourceDoc) => (kind.namespaced ? kind.key(doc.metadata.name, doc.metadata.namespace ?? DEFAULT_NAMESPACE) : kind.key(doc.metadata.name));

const displayName = (kind: ResourceKind<unknown>, doc: ResourceDoc) =>
  kind.namespaced ? `${doc.metadata.namespace ?? DEFAULT_NAMESPACE}/${doc.metadata.name}` : doc.metadata.name;

/** Field errors of a converted v1 document also show the v3 form they were found in. */
function fromDocExplained(p: ParsedDoc, existing: unknown): unknown {
  try {
    return p.kind.fromDoc(p.doc, p.at, existing);
  } catch (err) {
    if (!p.converted || !(err instanceof ValidationError)) throw err;
    const { apiVersion, kind, metadata, spec } = p.doc;
    throw new ValidationError('', `${err.message}\n(in the ${API_VERSION} form of a Calico v1 document:\n${v3Yaml({ apiVersion, kind, metadata, spec })})`);
  }
}

/** Validates everything first, then writes. Returns one summary line per kind. */
export async function writeResources(store: Datastore, verb: Verb, docs: ParsedDoc[]): Promise<string> {
  const planned: { kind: ResourceKind<unknown>; key: ReturnType<ResourceKind<unknown>['key']>; value: unknown; revision?: number }[] = [];
  const seen = new Map<string, string>();
  for (const parsed of docs) {
    const { kind, doc, at } = parsed;
    if (kind.readOnly) throw new ValidationError(at, kind.readOnly);
    const key = keyOf(kind, doc);
    const name = displayName(kind, doc);
    const earlier = seen.get(key.path);
    if (earlier !== undefined) throw new ValidationError(at, `${kind.kind} ${JSON.stringify(name)} is also given at ${earlier}; give each resource once`);
    seen.set(key.path, at);
    const existing = await store.get(key);
    if (verb === 'create' && existing) throw new AlreadyExistsError(kind.kind, name, 'use calico-ts apply or replace to change it');
    if (verb === 'replace' && !existing) throw new NotFoundError(kind.kind, name, 'use calico-ts create or apply');
    if (verb === 'delete') {
      if (!existing) throw new NotFoundError(kind.kind, name);
      if (kind.readOnlyCreate) throw new ValidationError(at, `${kind.kind} resources cannot be deleted with calico-ts`);
      planned.push({ kind, key, value: undefined, revision: existing.revision });
      continue;
    }
    if (kind.readOnlyCreate && !existing) kind.fromDoc(doc, at, undefined); // throws the kind's own message
    const value = fromDocExplained(parsed, existing?.value);
    planned.push({ kind, key, value, ...(existing ? { revision: existing.revision } : {}) });
  }
  for (const p of planned) {
    const key = p.key;
    if (verb === 'delete') await store.delete(key, p.revision);
    else if (p.revision === undefined) await store.create(key, p.value);
    else await store.update(key, p.value, p.revision);
  }
  const counts = new Map<string, number>();
  for (const p of planned) counts.set(p.kind.kind, (counts.get(p.kind.kind) ?? 0) + 1);
  const past = { apply: 'applied', create: 'created', replace: 'replaced', delete: 'deleted' }[verb];
  const summary = [...counts].map(([k, n]) => `Successfully ${past} ${n} '${k}' resource(s)`);
  const notes = docs.flatMap((d) => (d.converted ? [`Note: ${d.converted}`] : []));
  return [...notes, ...summary].join('\n');
}

export async function deleteByName(store: Datastore, kindName: string, names: string[], options: { namespace?: string } = {}): Promise<string> {
  const kind = requireKind(kindName);
  if (kind.readOnly) throw new ValidationError(kindName, kind.readOnly);
  const namespace = kind.namespaced ? checkNamespace(options.namespace ?? DEFAULT_NAMESPACE, '--namespace') : undefined;
  return writeResources(
    store,
    'delete',
    names.map((name) => ({
      kind,
      doc: { apiVersion: API_VERSION, kind: kind.kind, metadata: { name, ...(namespace ? { namespace } : {}) }, spec: {} },
      at: name,
    })),
  );
}

export function requireKind(name: string): ResourceKind<unknown> {
  const kind = kindByName(name);
  if (!kind) throw new ValidationError('kind', `${JSON.stringify(name)} is not a resource kind (${resourceKinds().flatMap((k) => k.names[1] ?? []).join(', ')})`);
  return kind;
}

export async function getResources(store: Datastore, kindName: string, names: string[], output: OutputFormat, options: GetOptions = {}): Promise<string> {
  const kind = requireKind(kindName);
  const allNamespaces = !!kind.namespaced && !!options.allNamespaces;
  if (allNamespaces && names.length > 0) throw new ValidationError('--all-namespaces', 'lists every resource; leave out the names, or pick one --namespace');
  const namespace = kind.namespaced ? checkNamespace(options.namespace ?? DEFAULT_NAMESPACE, '--namespace') : undefined;
  let match: ((labels: Record<string, string>) => boolean) | undefined;
  if (options.selector !== undefined) {
    if (!kind.selectorLabels) {
      const able = resourceKinds().filter((k) => k.selectorLabels).map((k) => k.names[1] ?? k.kind);
      throw new ValidationError('--selector', `filters only ${able.join(' and ')}, not ${kind.names[1] ?? kind.kind}`);
    }
    try {
      const sel = parseSelector(options.selector);
      match = (labels) => sel.matches(labels);
    } catch (err) {
      throw new ValidationError('--selector', err instanceof ValidationError ? err.message.replace(/^selector: /, '') : String(err));
    }
  }
  let values: unknown[];
  if (names.length > 0 && kind.matchName) {
    const all = (await store.list(kind.prefix())).items.map((i) => i.value);
    values = [];
    for (const name of names) {
      const found = all.filter((v) => kind.matchName!(v, name));
      if (found.length === 0) throw new NotFoundError(kind.kind, name);
      if (found.length > 1) {
        throw new ValidationError(name, `matches ${found.length} ${kind.kind}s (${found.map((v) => kind.name(v)).join(', ')}); give more of the name`);
      }
      values.push(found[0]);
    }
  } else if (names.length > 0) {
    values = [];
    for (const name of names) {
      const got = await store.get(kind.namespaced ? kind.key(name, namespace) : kind.key(name));
      if (!got) throw new NotFoundError(kind.kind, kind.namespaced ? `${namespace}/${name}` : name);
      values.push(got.value);
    }
  } else {
    values = (await store.list(kind.prefix())).items.map((i) => i.value);
    if (kind.namespaced && !allNamespaces) values = values.filter((v) => kind.namespace?.(v) === namespace);
  }
  if (match) {
    const labelsOf = await kind.selectorLabels!(store);
    values = values.filter((v) => match(labelsOf(v)));
  }
  if (output === 'yaml' || output === 'json') {
    const docs = values.map((v) => kind.toDoc(v));
    const body = names.length === 1 && docs.length === 1 ? docs[0] : { apiVersion: API_VERSION, kind: `${kind.kind}List`, items: docs };
    return output === 'json' ? JSON.stringify(body, null, 2) : stringify(body).trimEnd();
  }
  const wide = output === 'wide';
  const headers = wide ? kind.wideColumns : kind.columns;
  const rows = values.map((v) => kind.row(v, wide));
  if (allNamespaces) return renderTable(['NAMESPACE', ...headers], rows.map((r, i) => [kind.namespace?.(values[i]) ?? '', ...r]));
  return renderTable(headers, rows);
}
