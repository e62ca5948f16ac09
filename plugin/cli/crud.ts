/**
 * `apply | create | replace | delete | get`, written once over the resource registry. Every document of
 * a command is parsed and validated before anything is written: one bad document changes nothing.
 */
import { parseAllDocuments } from 'yaml';
import type { Datastore } from '../datastore/datastore.js';
import { AlreadyExistsError, NotFoundError, ValidationError } from '../lib/errors.js';
import { API_VERSION, RESOURCE_KINDS, kindByName, type ResourceDoc, type ResourceKind } from './resources.js';
import { renderTable } from './table.js';
import { stringify } from 'yaml';

export type Verb = 'apply' | 'create' | 'replace' | 'delete';
export type OutputFormat = 'table' | 'wide' | 'yaml' | 'json';

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

interface ParsedDoc {
  kind: ResourceKind<unknown>;
  doc: ResourceDoc;
  at: string;
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
  const d = v as Record<string, unknown>;
  const kindName = typeof d.kind === 'string' ? d.kind : '';
  const kind = kindByName(kindName);
  if (!kind || kind.kind !== kindName) {
    throw new ValidationError(`${at}.kind`, `${JSON.stringify(d.kind)} is not a supported kind (${RESOURCE_KINDS.map((k) => k.kind).join(', ')})`);
  }
  if (d.apiVersion !== API_VERSION) {
    const hint = d.apiVersion === 'v1' ? '; calico v1 documents are not accepted, write the projectcalico.org/v3 form' : '';
    throw new ValidationError(`${at}.apiVersion`, `must be ${API_VERSION}${hint}`);
  }
  const metadata = (d.metadata ?? {}) as ResourceDoc['metadata'];
  if (typeof metadata !== 'object' || typeof metadata.name !== 'string' || !NAME.test(metadata.name)) {
    throw new ValidationError(`${at}.metadata.name`, 'is required: lower-case letters, digits, - and . (no spaces or shell characters)');
  }
  const spec = d.spec ?? {};
  if (typeof spec !== 'object' || Array.isArray(spec)) throw new ValidationError(`${at}.spec`, 'must be a mapping');
  return { kind, doc: { apiVersion: API_VERSION, kind: kindName, metadata, spec: spec as Record<string, unknown> }, at };
}

/** Validates everything first, then writes. Returns one summary line per kind. */
export async function writeResources(store: Datastore, verb: Verb, docs: ParsedDoc[]): Promise<string> {
  const planned: { kind: ResourceKind<unknown>; name: string; value: unknown; revision?: number }[] = [];
  for (const { kind, doc, at } of docs) {
    const existing = await store.get(kind.key(doc.metadata.name));
    if (verb === 'create' && existing) throw new AlreadyExistsError(kind.kind, doc.metadata.name, 'use calico-ts apply or replace to change it');
    if (verb === 'replace' && !existing) throw new NotFoundError(kind.kind, doc.metadata.name, 'use calico-ts create or apply');
    if (verb === 'delete') {
      if (!existing) throw new NotFoundError(kind.kind, doc.metadata.name);
      if (kind.readOnlyCreate) throw new ValidationError(at, `${kind.kind} resources cannot be deleted with calico-ts`);
      planned.push({ kind, name: doc.metadata.name, value: undefined, revision: existing.revision });
      continue;
    }
    if (kind.readOnlyCreate && !existing) kind.fromDoc(doc, at, undefined); // throws the kind's own message
    const value = kind.fromDoc(doc, at, existing?.value);
    planned.push({ kind, name: doc.metadata.name, value, ...(existing ? { revision: existing.revision } : {}) });
  }
  for (const p of planned) {
    const key = p.kind.key(p.name);
    if (verb === 'delete') await store.delete(key, p.revision);
    else if (p.revision === undefined) await store.create(key, p.value);
    else await store.update(key, p.value, p.revision);
  }
  const counts = new Map<string, number>();
  for (const p of planned) counts.set(p.kind.kind, (counts.get(p.kind.kind) ?? 0) + 1);
  const past = { apply: 'applied', create: 'created', replace: 'replaced', delete: 'deleted' }[verb];
  return [...counts].map(([k, n]) => `Successfully ${past} ${n} '${k}' resource(s)`).join('\n');
}

export async function deleteByName(store: Datastore, kindName: string, names: string[]): Promise<string> {
  const kind = requireKind(kindName);
  return writeResources(
    store,
    'delete',
    names.map((name) => ({ kind, doc: { apiVersion: API_VERSION, kind: kind.kind, metadata: { name }, spec: {} }, at: name })),
  );
}

export function requireKind(name: string): ResourceKind<unknown> {
  const kind = kindByName(name);
  if (!kind) throw new ValidationError('kind', `${JSON.stringify(name)} is not a resource kind (${RESOURCE_KINDS.flatMap((k) => k.names[1] ?? []).join(', ')})`);
  return kind;
}

export async function getResources(store: Datastore, kindName: string, names: string[], output: OutputFormat): Promise<string> {
  const kind = requireKind(kindName);
  let values: unknown[];
  if (names.length > 0) {
    values = [];
    for (const name of names) {
      const got = await store.get(kind.key(name));
      if (!got) throw new NotFoundError(kind.kind, name);
      values.push(got.value);
    }
  } else {
    values = (await store.list(kind.prefix())).items.map((i) => i.value);
  }
  if (output === 'yaml' || output === 'json') {
    const docs = values.map((v) => kind.toDoc(v));
    const body = names.length === 1 ? docs[0] : { apiVersion: API_VERSION, kind: `${kind.kind}List`, items: docs };
    return output === 'json' ? JSON.stringify(body, null, 2) : stringify(body).trimEnd();
  }
  const wide = output === 'wide';
  return renderTable(wide ? kind.wideColumns : kind.columns, values.map((v) => kind.row(v, wide)));
}
