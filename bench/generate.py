"""Synthetic deployments: a dict in the deployment-file format, for `loader.parse` or YAML.

The shape, chosen to look like a multi-tenant cloud:
- `hosts` host switches with interfaces/hosts interfaces each, and one edge;
- networks of `net_size` interfaces; a tenant owns TENANT_NETWORKS of them and every tenant
  reuses the same CIDRs (10.0.m.0/24), so twin addresses exist across tenants;
- hosts are grouped in racks of `rack` hosts; a rack's slots are filled network by network,
  round-robin over its hosts: a host serves a few networks, not all of them;
- per tenant three security groups (web, app, db) with address-range and group rules;
  interfaces cycle through them, every 7th is in two; the first of each network is an
  appliance (source_dest_check false) and every 20th has a secondary address;
- authorizations between a tenant's consecutive networks;
- NAT: fixed blocks (the largest case for the edge: every block a separate cover), one per host, 256 ports, aligned
  except every 7th; a port forward and an elastic IP per network (up to 1000);
- one spare instance (no interface) per rack: the target of an interface move.
"""
from __future__ import annotations

from netaddr import IPAddress

TENANT_NETWORKS = 5
BLOCK = 256
FIRST_PORT = 1024
BLOCKS_PER_IP = (65536 - FIRST_PORT) // BLOCK

# name -> (interfaces, hosts, interfaces per network, hosts per rack)
SIZES = {
    "1k": (1_000, 100, 100, 10),
    "10k": (10_000, 1_000, 100, 10),
    "100k": (100_000, 2_000, 100, 10),
}
SMOKE_SIZES = {"smoke": (40, 4, 20, 2)}


def host_name(h: int) -> str:
    return f"host{h}"


def iface_name(j: int) -> str:
    return f"eni-{j}"


def network_name(k: int) -> str:
    return f"n{k}"


def group_names(tenant: int):
    return tuple(f"t{tenant}-{role}" for role in ("web", "app", "db"))


def security_groups(tenant: int) -> dict:
    web, app, db = group_names(tenant)
    any_out = [{"proto": "any", "to": "0.0.0.0/0"}]
    return {
        web: {"ingress": [{"proto": "tcp", "ports": "80", "from": "0.0.0.0/0"},
                          {"proto": "tcp", "ports": "443", "from": "0.0.0.0/0"},
                          {"proto": "tcp", "ports": "8000-8999", "from_group": web},
                          {"proto": "icmp", "from_group": web}],
              "egress": any_out},
        app: {"ingress": [{"proto": "tcp", "ports": "8080", "from_group": web},
                          {"proto": "tcp", "ports": "1024-65535", "from": "10.0.0.0/8"},
                          {"proto": "icmp", "from": "10.0.0.0/16"}],
              "egress": any_out},
        db: {"ingress": [{"proto": "tcp", "ports": "5432", "from_group": app},
                         {"proto": "tcp", "ports": "22", "from": "10.0.4.0/24"}],
             "egress": [{"proto": "tcp", "ports": "1024-65535", "to": "10.0.0.0/16"},
                        {"proto": "udp", "ports": "53", "to": "10.0.0.0/16"}]},
    }


def placement(j: int, per_host: int, rack: int) -> int:
    """The host of interface j: racks fill network by network, round-robin over their hosts."""
    slots = rack * per_host
    return j // slots * rack + j % slots % rack


def generate(interfaces: int, hosts: int, net_size: int = 100, rack: int = 10) -> dict:
    rack = min(rack, hosts)
    if interfaces % hosts or hosts % rack or interfaces % net_size or net_size > 200:
        raise ValueError("interfaces must fill hosts, hosts whole racks, and networks at most 200 interfaces")
    per_host = interfaces // hosts
    n_networks = interfaces // net_size
    n_tenants = -(-n_networks // TENANT_NETWORKS)

    switches = {host_name(h): {"role": "host", "dpid": h + 1, "prefix": f"fd00:5ee0:0:{h + 1:x}::/64"}
                for h in range(hosts)}
    switches["edge1"] = {"role": "edge", "dpid": 0x10000000, "prefix": "fd00:5ee0:1::/64",
                         "uplink": {"port": "uplink", "gateway_ip": "203.0.113.1", "ip": "203.0.113.2"}}

    networks = {}
    for k in range(n_networks):
        networks[network_name(k)] = {"id": k + 1, "entity": f"t{k // TENANT_NETWORKS}",
                                     "cidr": f"10.0.{k % TENANT_NETWORKS}.0/24"}

    instances, ifaces = {}, {}
    for j in range(interfaces):
        k, i = divmod(j, net_size)
        tenant = k // TENANT_NETWORKS
        vm = f"vm{j}"
        instances[vm] = {"switch": host_name(placement(j, per_host, rack)), "port": vm}
        roles = group_names(tenant)
        groups = [roles[i % 3]] + ([roles[(i + 1) % 3]] if i % 7 == 0 else [])
        net = networks[network_name(k)]
        base = int(IPAddress(net["cidr"].split("/")[0]))
        ips = [str(IPAddress(base + 2 + i))]
        if i % 20 == 19:
            ips.append(str(IPAddress(base + 2 + net_size + i // 20)))
        ifaces[iface_name(j)] = {"network": network_name(k), "ips": ips, "security_groups": groups,
                                 "source_dest_check": i != 0, "attach_to": vm, "attachers": [net["entity"]]}
    for r in range(hosts // rack):
        instances[f"spare{r}"] = {"switch": host_name(r * rack), "port": f"spare{r}"}

    groups = {}
    for t in range(n_tenants):
        groups.update(security_groups(t))
    authorizations = []
    for k in range(n_networks - 1):
        if (k + 1) // TENANT_NETWORKS == k // TENANT_NETWORKS:
            authorizations.append({"from": network_name(k), "to": network_name(k + 1), "proto": "tcp",
                                   "ports": "5432"})
            authorizations.append({"from": network_name(k + 1), "to": network_name(k), "proto": "icmp"})

    return {"version": 1, "switches": switches, "networks": networks, "instances": instances,
            "interfaces": ifaces, "security_groups": groups, "authorizations": authorizations,
            "nat": _nat(hosts, n_networks, net_size),
            "elastic_ips": [{"ip": str(IPAddress(int(IPAddress("198.19.0.0")) + k)),
                             "interface": iface_name(k * net_size + 1)} for k in range(min(n_networks, 1000))]}


def _nat(hosts: int, n_networks: int, net_size: int) -> dict:
    n_ips = -(-hosts // BLOCKS_PER_IP)
    public = [str(IPAddress(int(IPAddress("198.18.0.10")) + n)) for n in range(n_ips + 1)]
    blocks = []
    for h in range(hosts):
        ip, b = divmod(h, BLOCKS_PER_IP)
        lo = FIRST_PORT + b * BLOCK
        # Every 7th block is an unaligned range: it compiles to several value/mask pairs.
        lo, hi = (lo + 3, lo + 250) if h % 7 == 6 else (lo, lo + BLOCK - 1)
        blocks.append({"owner": host_name(h), "ip": public[ip], "ports": f"{lo}-{hi}"})
    forwards = [{"public": f"{public[-1]}:{10000 + k}", "interface": iface_name(k * net_size), "port": 80,
                 "proto": "tcp"} for k in range(min(n_networks, 1000))]
    return {"public_ips": public, "reserved_ports": ["0-1023"], "block_bits": 8, "blocks": blocks,
            "forwards": forwards}


def sized(name: str) -> dict:
    interfaces, hosts, net_size, rack = {**SIZES, **SMOKE_SIZES}[name]
    return generate(interfaces, hosts, net_size, rack)
