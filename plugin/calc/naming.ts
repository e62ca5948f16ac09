/** Names derived from Docker IDs. Pure; shared by the API (Join) and the reconciler. */

export const HOST_VETH_PREFIX = 'cali';
export const PEER_VETH_PREFIX = 'tmp';

/** `cali` + the first 11 characters of the endpoint ID: 15 chars, the kernel's limit. */
export function hostVethName(endpointId: string): string {
  return `${HOST_VETH_PREFIX}${endpointId.slice(0, 11)}`;
}

/** The container end while it still sits in the host namespace; Docker renames it to eth0. */
export function peerVethName(endpointId: string): string {
  return `${PEER_VETH_PREFIX}${endpointId.slice(0, 11)}`;
}
