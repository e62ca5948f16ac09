/**
 * `calico-ts node run` configuration, from the environment only (so it works the same as a service,
 * in a managed plugin, and in tests that run several nodes on one machine).
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { EtcdConfig } from '../datastore/etcd.js';
import { ValidationError } from '../lib/errors.js';
import { defaultIPv6Pool } from '../ipam/ipam.js';
import { parseLogLevel, type LogLevel } from '../lib/log.js';

export interface NodeConfig {
  nodeName: string;
  /** `IP`: this host's IPv4 address as other hosts reach it; unset or "autodetect" = detect it. */
  ip: string | undefined;
  /** IP_AUTODETECTION_METHOD: first-found | interface=<regex> | can-reach=<address>. */
  ipAutodetectionMethod: string | undefined;
  /** `IP6`: this host's IPv6 address (next hop of its IPv6 blocks); unset/"autodetect" = detect, "none" = no IPv6. */
  ip6: string | undefined;
  /** IP6_AUTODETECTION_METHOD, as IP_AUTODETECTION_METHOD. */
  ip6AutodetectionMethod: string | undefined;
  /** `AS`: this node's AS number, overriding BGPConfiguration's; undefined = keep what the datastore says. */
  asNumber: number | undefined;
  /** `ROUTE_REFLECTOR_CLUSTER_ID`: make this node a route reflector. */
  routeReflectorClusterId: string | undefined;
  /** CALICO_TS_IPV6_POOL_CIDR: create the IPv6 pool `default-ipv6-ippool` (blocks /122) with this CIDR
   * when the cluster has no IPv6 pool. Unset: no IPv6 pool is made (IPv6 needs one applied by hand). */
  ipv6PoolCidr: string | undefined;
  /** CALICO_NETWORKING_BACKEND: `bird` (BGP sidecar) or `none` (no route distribution). */
  networkingBackend: 'bird' | 'none';
  /** CALICO_TS_POLICY_ENFORCEMENT (default true): enforce profiles and policies with iptables. False =
   * accept all traffic on cali interfaces (no isolation; for debugging). */
  policyEnforcement: boolean;
  etcd: EtcdConfig;
  socketPath: string;
  /** CALICO_TS_DRIVER_NAME: the driver name this host's Docker uses for us: `calico-ts` (legacy socket,
   * the socket's name) or `calico-ts:latest` (the managed plugin sets it). */
  driverName: string;
  /** Docker API: a unix socket path. */
  dockerSocket: string;
  runDir: string;
  /** CALICO_TS_SYSCTL_ROOT: where to write sysctls (files, with cat/tee) instead of sysctl(8); the managed
   * plugin sets it to its bind mount of the host's /proc/sys, since its own /proc/sys is read-only. */
  sysctlRoot: string | undefined;
  logLevel: LogLevel;
  reconcileIntervalMs: number;
  gcIntervalMs: number;
  /** Endpoints and addresses younger than this are never garbage-collected (Docker may not list them yet). */
  gcGraceMs: number;
  /** Addresses Docker requested but never bound to an endpoint are kept this long (a slow `docker run`). */
  gcUnboundGraceMs: number;
  /** Veth MTU when neither the network nor the pool's encapsulation decides it; 0 = automatic. */
  defaultMtu: number;
  /** vxlan.calico's MTU (CALICO_TS_VXLAN_MTU or FELIX_VXLANMTU); 0 = the underlay's − 50. */
  vxlanMtu: number;
  /** tunl0's MTU (CALICO_TS_IPIP_MTU or FELIX_IPINIPMTU); 0 = the underlay's − 20. */
  ipipMtu: number;
}

export const DEFAULT_ETCD_ENDPOINT = 'http://127.0.0.1:2379';
const NAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$/;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const nodeName = env.NODENAME || hostname();
  if (!NAME_PATTERN.test(nodeName)) throw new ValidationError('NODENAME', `${JSON.stringify(nodeName)} is not a valid node name (letters, digits, . _ -)`);
  const endpoints = (env.ETCD_ENDPOINTS || DEFAULT_ETCD_ENDPOINT).split(',').map((s) => s.trim()).filter(Boolean);
  for (const e of endpoints) {
    if (!/^https?:\/\/[^\s/]+$/.test(e)) throw new ValidationError('ETCD_ENDPOINTS', `${JSON.stringify(e)} is not a URL like http://127.0.0.1:2379`);
  }
  const dockerHost = env.DOCKER_HOST || 'unix:///var/run/docker.sock';
  if (!dockerHost.startsWith('unix://')) throw new ValidationError('DOCKER_HOST', 'only unix:// sockets are supported');
  const runDir = env.CALICO_TS_RUN_DIR || '/run/calico-ts';
  /** Our name, or Felix's when only that is set (errors then name the variable the user set). */
  const alias = (ours: string, felix: string): string => (env[ours] === undefined || env[ours] === '') && env[felix] ? felix : ours;
  const number = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new ValidationError(name, `${JSON.stringify(raw)} must be an integer from ${min} to ${max}`);
    return n;
  };
  return {
    nodeName,
    ip: env.IP && env.IP !== 'autodetect' ? env.IP : undefined,
    ipAutodetectionMethod: env.IP_AUTODETECTION_METHOD || undefined,
    ip6: env.IP6 && env.IP6 !== 'autodetect' ? env.IP6 : undefined,
    ip6AutodetectionMethod: env.IP6_AUTODETECTION_METHOD || undefined,
    asNumber: env.AS ? number('AS', 64512, 1, 4294967295) : undefined,
    routeReflectorClusterId: env.ROUTE_REFLECTOR_CLUSTER_ID || undefined,
    ipv6PoolCidr: env.CALICO_TS_IPV6_POOL_CIDR ? defaultIPv6Pool(env.CALICO_TS_IPV6_POOL_CIDR).cidr : undefined,
    networkingBackend: backend(env.CALICO_NETWORKING_BACKEND),
    policyEnforcement: flag('CALICO_TS_POLICY_ENFORCEMENT', env.CALICO_TS_POLICY_ENFORCEMENT, true),
    etcd: {
      endpoints,
      ...(env.ETCD_CA_CERT_FILE ? { caFile: env.ETCD_CA_CERT_FILE } : {}),
      ...(env.ETCD_CERT_FILE ? { certFile: env.ETCD_CERT_FILE } : {}),
      ...(env.ETCD_KEY_FILE ? { keyFile: env.ETCD_KEY_FILE } : {}),
    },
    socketPath: env.CALICO_TS_SOCKET || '/run/docker/plugins/calico-ts.sock',
    driverName: driverName(env.CALICO_TS_DRIVER_NAME),
    dockerSocket: dockerHost.slice('unix://'.length),
    runDir,
    sysctlRoot: env.CALICO_TS_SYSCTL_ROOT || undefined,
    logLevel: parseLogLevel(env.LOG_LEVEL),
    reconcileIntervalMs: number('CALICO_TS_RECONCILE_INTERVAL_MS', 30_000, 100, 86_400_000),
    gcIntervalMs: number('CALICO_TS_GC_INTERVAL_MS', 60_000, 100, 86_400_000),
    gcGraceMs: number('CALICO_TS_GC_GRACE_MS', 60_000, 0, 86_400_000),
    gcUnboundGraceMs: number('CALICO_TS_GC_UNBOUND_GRACE_MS', 600_000, 0, 86_400_000),
    defaultMtu: number(alias('CALICO_TS_VETH_MTU', 'FELIX_VETHMTU'), 0, 0, 65535),
    vxlanMtu: number(alias('CALICO_TS_VXLAN_MTU', 'FELIX_VXLANMTU'), 0, 0, 65535),
    ipipMtu: number(alias('CALICO_TS_IPIP_MTU', 'FELIX_IPINIPMTU'), 0, 0, 65535),
  };
}

function flag(name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === '') return fallback;
  if (['true', '1', 'yes'].includes(value.toLowerCase())) return true;
  if (['false', '0', 'no'].includes(value.toLowerCase())) return false;
  throw new ValidationError(name, `${JSON.stringify(value)} must be true or false`);
}

function driverName(value: string | undefined): string {
  if (value === undefined || value === '') return 'calico-ts';
  if (!/^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$/.test(value)) throw new ValidationError('CALICO_TS_DRIVER_NAME', `${JSON.stringify(value)} is not a Docker plugin name like calico-ts or calico-ts:latest`);
  return value;
}

function backend(value: string | undefined): 'bird' | 'none' {
  if (value === undefined || value === '' || value === 'bird') return 'bird';
  if (value === 'none') return 'none';
  throw new ValidationError('CALICO_NETWORKING_BACKEND', `${JSON.stringify(value)} must be bird or none`);
}

export const statusFile = (config: NodeConfig): string => join(config.runDir, 'status.json');
