/**
 * Pure: datastore snapshot for one node → the host state the dataplane should realise.
 */
import type { Block, WorkloadEndpoint } from '../datastore/model.js';
import type { DesiredHostState } from '../dataplane/types.js';
import { peerVethName } from './naming.js';

export function desiredHostState(node: string, endpoints: readonly WorkloadEndpoint[], blocks: readonly Block[]): DesiredHostState {
  return {
    endpoints: endpoints
      .filter((ep) => ep.node === node)
      .map((ep) => ({
        interfaceName: ep.interfaceName,
        peerName: peerVethName(ep.endpointId),
        ipNetworks: [...ep.ipNetworks].sort(),
        mtu: ep.mtu,
      }))
      .sort((a, b) => (a.interfaceName < b.interfaceName ? -1 : 1)),
    blackholes: blocks
      .filter((b) => b.affinity === `host:${node}`)
      .map((b) => b.cidr)
      .sort(),
  };
}
