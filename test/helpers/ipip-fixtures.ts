/** BGP inputs of a node with IPIP pools, shared by the render unit test and the `bird -p` check. */
import { DEFAULT_BGP_CONFIG, type BgpInputs } from '../../plugin/bgp/types.js';

export const ipipInputs: BgpInputs = {
  self: { name: 'host-a', ipv4: '10.0.0.1', asNumber: 64512, labels: {} },
  nodes: [
    { name: 'host-a', ipv4: '10.0.0.1', asNumber: 64512, labels: {} },
    { name: 'host-b', ipv4: '10.0.1.2', asNumber: 64512, labels: {} },
  ],
  config: DEFAULT_BGP_CONFIG,
  peers: [],
  localBlocks: ['10.77.3.0/26'],
  pools: [
    { cidr: '10.77.0.0/16', disabled: false, ipipMode: 'Always' },
    { cidr: '10.78.0.0/16', disabled: false, ipipMode: 'CrossSubnet' },
    { cidr: '10.79.0.0/16', disabled: true, ipipMode: 'Always' },
    { cidr: '192.168.0.0/16', disabled: false, ipipMode: 'Never' },
    { cidr: 'fd00:7::/48', disabled: false, ipipMode: 'Always' },
  ],
  localSubnet: '10.0.0.0/24',
  ipipTunnel: true,
};
