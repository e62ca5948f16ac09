/**
 * The libnetwork remote-driver and remote-IPAM wire format: request shapes, and strict readers that
 * turn a bad field into a BadRequestError naming it. Handlers never index the raw body themselves.
 */
import { BadRequestError } from '../lib/errors.js';

export type Body = Record<string, unknown>;

/** Docker IDs are 64 hex chars; accept any plain token so hand-written clients work, but never shell characters. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function asBody(value: unknown): Body {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new BadRequestError('request body must be a JSON object');
  }
  return value as Body;
}

export function readId(body: Body, field: string): string {
  const v = body[field];
  if (typeof v !== 'string' || v === '') throw new BadRequestError(`${field} is required`);
  if (!ID_PATTERN.test(v)) throw new BadRequestError(`${field} ${JSON.stringify(v)} is not a valid ID`);
  return v;
}

export function readOptionalString(body: Body, field: string): string {
  const v = body[field];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new BadRequestError(`${field} must be a string`);
  return v;
}

export function readOptionalObject(body: Body, field: string): Body {
  const v = body[field];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new BadRequestError(`${field} must be an object`);
  return v as Body;
}

export function readOptionalBoolean(body: Body, field: string): boolean {
  const v = body[field];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new BadRequestError(`${field} must be a boolean`);
  return v;
}

/** IPv4Data / IPv6Data entries of CreateNetwork. */
export interface IpamData {
  AddressSpace: string;
  Pool: string;
  Gateway: string;
  AuxAddresses: Record<string, string>;
}

export function readIpamData(body: Body, field: string): IpamData[] {
  const v = body[field];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new BadRequestError(`${field} must be an array`);
  return v.map((entry, i) => {
    const e = asBody(entry);
    const data: IpamData = {
      AddressSpace: readOptionalString(e, 'AddressSpace'),
      Pool: readOptionalString(e, 'Pool'),
      Gateway: readOptionalString(e, 'Gateway'),
      AuxAddresses: readOptionalObject(e, 'AuxAddresses') as Record<string, string>,
    };
    if (!data.Pool) throw new BadRequestError(`${field}[${i}].Pool is required`);
    return data;
  });
}

/** The gateway every container routes through; answered by proxy ARP on the host veth. */
export const GATEWAY_V4 = '169.254.1.1';
/**
 * The IPv6 gateway: the link-local address the kernel gives every host veth (EUI-64 of its fixed MAC
 * ee:ee:ee:ee:ee:ee, with addr_gen_mode 0 set by the dataplane). Known before the veth has carrier, so
 * Join can answer with it; the host answers neighbour solicitations for it itself (no proxy NDP needed).
 */
export const GATEWAY_V6 = 'fe80::ecee:eeff:feee:eeee';

export const OPTION_GENERIC = 'com.docker.network.generic';
export const OPTION_MTU = 'com.docker.network.driver.mtu';
export const OPTION_INTERNAL = 'com.docker.network.internal';
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';
