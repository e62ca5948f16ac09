/**
 * libnetwork IpamDriver. PoolID is the network's subnet in CIDR form, so every call is stateless:
 * RequestAddress allocates inside it, ReleaseAddress frees by address (the block is computed, no scan).
 * The gateway Docker asks for is not a real address: containers route via 169.254.1.1 (proxy ARP) and,
 * for IPv6, via the host veth's link-local address (GATEWAY_V6).
 */
import { formatCidr, parseAddress, parseCidr } from '../lib/cidr.js';
import type { Ipam } from '../ipam/ipam.js';
import { UnsupportedError } from '../lib/errors.js';
import {
  GATEWAY_ADDRESS_TYPE,
  GATEWAY_V4,
  GATEWAY_V6,
  REQUEST_ADDRESS_TYPE,
  readOptionalBoolean,
  readOptionalObject,
  readOptionalString,
  type Body,
} from './protocol.js';
import { BadRequestError } from '../lib/errors.js';

/** What Docker is told a network's pool is when it uses the default pool (see requestPool). */
export const ANY_IPV4 = '0.0.0.0/0';
export const ANY_IPV6 = '::/0';

export class IpamDriver {
  constructor(private readonly ipam: Ipam) {}

  getCapabilities(): Body {
    return { RequiresMACAddress: false, RequiresRequestReplay: false };
  }

  getDefaultAddressSpaces(): Body {
    return { LocalDefaultAddressSpace: 'CalicoLocalAddressSpace', GlobalDefaultAddressSpace: 'CalicoGlobalAddressSpace' };
  }

  async requestPool(body: Body): Promise<Body> {
    const family = readOptionalBoolean(body, 'V6') ? 6 : 4;
    if (readOptionalString(body, 'SubPool')) {
      throw new UnsupportedError(
        '--ip-range is not supported by calico-ts; pass a smaller --subnet (inside a calico-ts pool) instead',
      );
    }
    const subnet = readOptionalString(body, 'Pool');
    const { range } = await this.ipam.resolveRange(subnet || undefined, family);
    const cidr = formatCidr(range);
    // Without --subnet, Docker checks the returned pool against the host's routes and, on overlap,
    // asks again forever (libnetwork requestPoolHelper). Our own /32 and block routes always overlap
    // the pool, so answer 0.0.0.0/0 (::/0), which Docker does not check; the PoolID names the real pool.
    return { PoolID: cidr, Pool: subnet ? cidr : family === 4 ? ANY_IPV4 : ANY_IPV6, Data: {} };
  }

  async releasePool(body: Body): Promise<Body> {
    parseCidr(readPoolId(body), 'PoolID');
    // Blocks go back to the pool as their addresses are released; nothing is held per network.
    return {};
  }

  async requestAddress(body: Body): Promise<Body> {
    const poolId = readPoolId(body);
    const { family } = parseCidr(poolId, 'PoolID');
    const [gateway, hostPrefix] = family === 4 ? [GATEWAY_V4, 32] : [GATEWAY_V6, 128];
    const address = readOptionalString(body, 'Address');
    const options = readOptionalObject(body, 'Options');
    if (options[REQUEST_ADDRESS_TYPE] === GATEWAY_ADDRESS_TYPE) {
      if (address && address !== gateway) {
        throw new UnsupportedError(
          `--gateway is not supported by calico-ts: containers always route via ${gateway} on their host; omit --gateway`,
        );
      }
      return { Address: `${gateway}/${hostPrefix}`, Data: {} };
    }
    const ip = address ? await this.ipam.assign(address, poolId) : await this.ipam.autoAssign(poolId);
    return { Address: `${ip}/${hostPrefix}`, Data: {} };
  }

  async releaseAddress(body: Body): Promise<Body> {
    parseCidr(readPoolId(body), 'PoolID');
    const address = readOptionalString(body, 'Address');
    if (!address) throw new BadRequestError('Address is required');
    parseAddress(address, 'Address');
    if (address !== GATEWAY_V4 && address !== GATEWAY_V6) await this.ipam.release(address);
    return {};
  }
}

function readPoolId(body: Body): string {
  const id = readOptionalString(body, 'PoolID');
  if (!id) throw new BadRequestError('PoolID is required');
  return id;
}
