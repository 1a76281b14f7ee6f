"""The deployment-file loader: YAML in, a validated `Deployment` out, or every problem at once.

Parsing has two phases. The first turns each item of the file into a model value, checking keys,
types and formats; a field that fails is reported and left None, so that the second phase can still
check the item's other fields. The second checks what needs several items together: uniqueness,
overlaps, addresses against their network, NAT against its pool, skipping fields that are None. All
problems are collected and raised together, so `vpcflow check` shows every one in a single run; the
Deployment is built only when there are none, so no None ever leaves this module.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional

import yaml
from netaddr import AddrFormatError, IPAddress, IPNetwork

from vpcflow.topology import nat_alloc
from vpcflow.topology.model import (
    EDGE,
    HOST,
    PROTOCOLS,
    TUNNEL_PORT,
    Authorization,
    Deployment,
    ElasticIp,
    Forward,
    Instance,
    Interface,
    Nat,
    NatBlock,
    Network,
    PortRange,
    Rule,
    SecurityGroup,
    Switch,
    Uplink,
    derived_mac,
    frozen_map,
)

VERSION = 1
MAX_NETWORK_ID = (1 << 24) - 1
MAX_DPID = (1 << 63) - 1  # the top bit marks the switch's underlay datapath
MAX_PREFIX_LEN = 72  # the low 56 bits carry the network id and the IPv4 address
MAX_NETWORK_PREFIX_LEN = 30  # network, gateway and broadcast addresses leave one host at /30
MIN_BLOCK_BITS, MAX_BLOCK_BITS = 4, 16
PORTED_PROTOCOLS = ("tcp", "udp")

# Linux interface names: IFNAMSIZ is 16 with the NUL; keep to characters every tool accepts.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")
_PORTS = re.compile(r"\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?")

TOP_KEYS = ("version", "switches", "networks", "instances", "interfaces", "security_groups",
            "authorizations", "nat", "elastic_ips")
SWITCH_KEYS = ("role", "dpid", "prefix"), ("uplink", "bridge", "underlay_bridge", "underlay_port")
UPLINK_KEYS = ("port", "gateway_ip", "ip"), ("mac",)
NETWORK_KEYS = ("id", "entity", "cidr"), ()
INSTANCE_KEYS = ("switch", "port"), ()
INTERFACE_KEYS = ("network", "ips"), ("mac", "security_groups", "source_dest_check", "attach_to",
                                      "delete_on_terminate", "attachers")
GROUP_KEYS = (), ("ingress", "egress")
AUTHORIZATION_KEYS = ("from", "to", "proto"), ("ports",)
NAT_KEYS = (), ("public_ips", "reserved_ports", "block_bits", "blocks", "forwards")
BLOCK_KEYS = ("owner", "ip", "ports"), ()
FORWARD_KEYS = ("public", "interface", "port", "proto"), ()
ELASTIC_IP_KEYS = ("ip", "interface"), ()
# Which keys name a rule's peer, by direction.
PEER_KEYS = {"ingress": ("from", "from_group"), "egress": ("to", "to_group")}


class Problem(NamedTuple):
    path: str  # where in the file, e.g. "interfaces.eni-web2.ips[0]"; "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DeploymentError(Exception):
    def __init__(self, problems: Iterable[Problem], source: str = "<data>"):
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))


def parse(data, source: str = "<data>") -> Deployment:
    """Validate an already-parsed YAML object; raise DeploymentError listing every problem."""
    return _Loader().load(data, source)


def load_text(text: str, source: str = "<text>") -> Deployment:
    data, problems = _read_yaml(text, source)
    try:
        deployment = parse(data, source)
    except DeploymentError as error:
        problems += error.problems
    if problems:
        raise DeploymentError(problems, source)
    return deployment


def load_file(path) -> Deployment:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise DeploymentError([Problem(source, f"cannot read the file: {reason}")], source)
    return load_text(text, source)


# --- YAML ---------------------------------------------------------------------------------------

# libyaml's parser where PyYAML has it (PyPI's wheels do): the pure-Python one took 13 s to read
# a deployment of 10,000 interfaces (2.3 MB), what the controller does at every start and reload.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """A safe loader that notes duplicate mapping keys: plain YAML keeps the last one silently."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(text: str, source: str) -> tuple[object, list[Problem]]:
    """The data, and a problem for each duplicate key (reported with the file's other problems)."""
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        raise DeploymentError([Problem(source, f"invalid YAML: {_describe_yaml_error(error)}")], source)
    finally:
        loader.dispose()
    return data, [Problem(source, f"line {line}: key {key!r} appears twice in one mapping")
                  for line, key in loader.duplicates]


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    reason = getattr(error, "problem", None) or str(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {reason}" if mark else reason


# --- Converters: one raw YAML value to one model value, or _Invalid with the reason -------------

class _Invalid(ValueError):
    pass


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _string(value) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"must be a non-empty string, not {_kind(value)}")
    return value


def _integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be an integer, not {_kind(value)}")
    return value


def _boolean(value) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {_kind(value)}")
    return value


def _ifname(value) -> str:
    name = _string(value)
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise _Invalid(f"{name!r} is not usable as a Linux interface name "
                       "(1-15 letters, digits, '-', '_' or '.')")
    return name


def _role(value) -> str:
    if value not in (HOST, EDGE):
        raise _Invalid(f"must be {HOST} or {EDGE}, not {value!r}")
    return value


def _dpid(value) -> int:
    if isinstance(value, str):  # YAML reads 0x1 as an int, "0x1" stays a string
        try:
            value = int(value, 0)
        except ValueError:
            raise _Invalid(f"{value!r} is not an integer such as 0x1") from None
    dpid = _integer(value)
    if not 1 <= dpid <= MAX_DPID:
        raise _Invalid(f"{dpid:#x} is outside 0x1..{MAX_DPID:#x} (the top bit is for the underlay)")
    return dpid


def _network_id(value) -> int:
    netid = _integer(value)
    if not 1 <= netid <= MAX_NETWORK_ID:  # 0 is the switches' own addresses (Switch.substrate_address)
        raise _Invalid(f"{netid} is outside 1..{MAX_NETWORK_ID}: ids are 24 bits and 0 is reserved")
    return netid


def _address(value, version: int) -> IPAddress:
    if not isinstance(value, str):
        raise _Invalid(f"must be an IPv{version} address string, not {_kind(value)}")
    try:
        return IPAddress(value, version)
    except (AddrFormatError, ValueError):
        raise _Invalid(f"{value!r} is not an IPv{version} address") from None


def _ipv4(value) -> IPAddress:
    return _address(value, 4)


def _cidr(value, version: int) -> IPNetwork:
    example = "10.0.0.0/24" if version == 4 else "fd00:5ee0:0:1::/64"
    if not isinstance(value, str):
        raise _Invalid(f"must be a CIDR string such as {example}, not {_kind(value)}")
    address, slash, length = value.partition("/")
    if not slash or not re.fullmatch(r"[0-9]{1,3}", length) or int(length) > (32 if version == 4 else 128):
        raise _Invalid(f"{value!r} is not a CIDR such as {example}")
    try:
        network = IPNetwork(f"{IPAddress(address, version)}/{int(length)}")
    except (AddrFormatError, ValueError):
        raise _Invalid(f"{value!r} is not an IPv{version} CIDR such as {example}") from None
    if network.ip != network.network:  # host bits set: most likely a typo
        raise _Invalid(f"{value!r} has host bits set; the network is {network.cidr}")
    return network


def _ipv4_cidr(value) -> IPNetwork:
    return _cidr(value, 4)


def _network_cidr(value) -> IPNetwork:
    cidr = _ipv4_cidr(value)
    if cidr.prefixlen > MAX_NETWORK_PREFIX_LEN:
        raise _Invalid(f"{cidr} is too small: a network needs at least a /{MAX_NETWORK_PREFIX_LEN}")
    return cidr


def _switch_prefix(value) -> IPNetwork:
    prefix = _cidr(value, 6)
    if prefix.prefixlen > MAX_PREFIX_LEN:
        raise _Invalid(f"{prefix} is longer than /{MAX_PREFIX_LEN}: "
                       "the low 56 bits carry the network id and address")
    return prefix


def _mac(value) -> str:
    if not isinstance(value, str):  # unquoted, YAML may read 12:00:00:00:00:11 as a number
        raise _Invalid(f"must be a quoted string such as \"02:00:00:00:00:11\", not {_kind(value)}")
    if not _MAC.fullmatch(value):
        raise _Invalid(f"{value!r} is not a MAC address such as 02:00:00:00:00:11")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise _Invalid(f"{mac} is a multicast address; an interface needs a unicast one")
    if mac == "00:00:00:00:00:00":
        raise _Invalid("00:00:00:00:00:00 is not a usable address")
    return mac


def _protocol(value) -> str:
    if value not in PROTOCOLS:
        raise _Invalid(f"must be one of {', '.join(PROTOCOLS)}, not {value!r}")
    return value


def _ported_protocol(value) -> str:
    if value not in PORTED_PROTOCOLS:
        raise _Invalid(f"must be tcp or udp, not {value!r}")
    return value


def _port_range(value, lowest: int = 1) -> PortRange:
    """An int (80) or a string ("80", "8000-8999")."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _PORTS.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(f"{value!r} is not a port or a range such as \"8000-8999\"")
    lo = int(match.group(1))
    hi = int(match.group(2) or lo)
    if not lowest <= lo <= hi <= 65535:
        raise _Invalid(f"{value!r} must be within {lowest}..65535 with the low port first")
    return PortRange(lo, hi)


def _reserved_range(value) -> PortRange:
    return _port_range(value, lowest=0)


def _port(value) -> int:
    ports = _port_range(value)
    if ports.lo != ports.hi:
        raise _Invalid(f"{value!r} must be a single port")
    return ports.lo


def _block_bits(value) -> int:
    bits = _integer(value)
    if not MIN_BLOCK_BITS <= bits <= MAX_BLOCK_BITS:
        raise _Invalid(f"{bits} is outside {MIN_BLOCK_BITS}..{MAX_BLOCK_BITS}")
    return bits


def _endpoint(value) -> tuple[IPAddress, int]:
    """A forward's public side, "198.51.100.10:8080"."""
    address, colon, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not colon:
        raise _Invalid(f"{value!r} is not an address and port such as \"198.51.100.10:8080\"")
    return _ipv4(address), _port(port)


# --- Phase 1: items ------------------------------------------------------------------------------

def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


class _Loader:
    def __init__(self):
        self.problems: list[Problem] = []
        self.declared: dict[str, set] = {}  # section -> names, to check references before parsing
        self.switches: dict[str, Switch] = {}
        self.networks: dict[str, Network] = {}
        self.instances: dict[str, Instance] = {}
        self.interfaces: dict[str, Interface] = {}

    def load(self, data, source: str) -> Deployment:
        deployment = self.build(data)
        if self.problems:
            raise DeploymentError(self.problems, source)
        return deployment

    # Reporting and reading helpers.

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def fields(self, raw, path: str, keys) -> Optional[dict]:
        """The mapping's known keys (optional ones given as null count as absent), or None."""
        required, optional = keys
        if not isinstance(raw, dict):
            self.problem(path, f"must be a mapping, not {_kind(raw)}")
            return None
        for key in raw:
            if key not in required and key not in optional:
                self.problem(_join(path, key), f"unknown key; expected {', '.join(required + optional)}")
        for key in required:
            if key not in raw:
                self.problem(_join(path, key), "missing required key")
        return {k: v for k, v in raw.items()
                if k in required or (k in optional and v is not None)}

    def convert(self, value, path: str, converter: Callable):
        try:
            return converter(value)
        except _Invalid as error:
            self.problem(path, str(error))
            return None

    def get(self, fields: dict, path: str, key: str, converter: Callable, default=None):
        if key not in fields:
            return default
        return self.convert(fields[key], _join(path, key), converter)

    def items(self, raw, path: str) -> list[tuple[str, object]]:
        """(path, item) for each item of a list; absent or null means empty."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(path, f"must be a list, not {_kind(raw)}")
            return []
        return [(f"{path}[{index}]", item) for index, item in enumerate(raw)]

    def get_entries(self, fields: dict, path: str, key: str, converter: Callable) -> list:
        """(path, value) for each valid item of a list field; invalid ones are reported and left out."""
        entries = ((item_path, self.convert(item, item_path, converter))
                   for item_path, item in self.items(fields.get(key), _join(path, key)))
        return [(item_path, value) for item_path, value in entries if value is not None]

    def get_list(self, fields: dict, path: str, key: str, converter: Callable) -> tuple:
        return tuple(value for _, value in self.get_entries(fields, path, key, converter))

    def unique(self, entries: Iterable[tuple[object, str, object]], describe: Callable) -> None:
        """Report each (key, path, owner) whose key an earlier entry already has."""
        first: dict = {}
        for key, path, owner in entries:
            if key is None or (isinstance(key, tuple) and None in key):
                continue  # a field that failed to parse, already reported
            if key in first:
                self.problem(path, describe(key, first[key]))
            else:
                first[key] = owner

    def named(self, data: dict, section: str) -> list[tuple[str, object, str]]:
        """(name, item, path) for each item of a top-level mapping section."""
        raw = data.get(section)
        if raw is None:
            return []
        if not isinstance(raw, dict):
            self.problem(section, f"must be a mapping of names, not {_kind(raw)}")
            return []
        entries = []
        for name, item in raw.items():
            if isinstance(name, str) and name:
                entries.append((name, item, _join(section, name)))
            else:
                self.problem(_join(section, name), "a name must be a non-empty string")
        return entries

    def reference(self, section: str, what: str) -> Callable:
        def check(value):
            name = _string(value)
            if name not in self.declared[section]:
                raise _Invalid(f"{what} {name!r} does not exist")
            return name
        return check

    def declare(self, data: dict) -> None:
        for section in ("switches", "networks", "instances", "interfaces", "security_groups"):
            raw = data.get(section)
            names = raw.keys() if isinstance(raw, dict) else ()
            self.declared[section] = {n for n in names if isinstance(n, str) and n}

    # The file.

    def build(self, data) -> Optional[Deployment]:
        if data is None:
            self.problem("", "the file is empty; expected a mapping with version and switches")
            return None
        top = self.fields(data, "", (("version", "switches"), TOP_KEYS[2:]))
        if top is None:
            return None
        self.get(top, "", "version", _version)
        self.declare(top)
        self.switches = self.build_named(top, "switches", self.switch)
        self.networks = self.build_named(top, "networks", self.network)
        self.instances = self.build_named(top, "instances", self.instance)
        self.interfaces = self.build_named(top, "interfaces", self.interface)
        groups = self.build_named(top, "security_groups", self.security_group)
        authorizations = self.build_list(top.get("authorizations"), "authorizations", self.authorization)
        nat, blocks, forwards = self.nat(top.get("nat"))
        elastic_ips = self.build_list(top.get("elastic_ips"), "elastic_ips", self.elastic_ip)
        checks = _Checks(self, blocks, forwards, elastic_ips)
        checks.run(nat)
        nat = checks.nat_pool(nat)
        if self.problems:
            return None
        return Deployment(
            switches=frozen_map(self.switches), networks=frozen_map(self.networks),
            instances=frozen_map(self.instances), interfaces=frozen_map(self.interfaces),
            security_groups=frozen_map(groups), authorizations=tuple(a for _, a in authorizations),
            nat=nat, elastic_ips=tuple(e for _, e in elastic_ips))

    def build_named(self, data: dict, section: str, build: Callable) -> dict:
        """name -> value for each item that is a mapping (fields that failed are None)."""
        built = ((name, build(name, item, path)) for name, item, path in self.named(data, section))
        return {name: value for name, value in built if value is not None}

    def build_list(self, raw, section: str, build: Callable) -> list[tuple[str, object]]:
        """(path, value) for each item that is a mapping: later checks report against the path."""
        built = ((path, build(item, path)) for path, item in self.items(raw, section))
        return [(path, value) for path, value in built if value is not None]

    # Switches.

    def switch(self, name: str, raw, path: str) -> Optional[Switch]:
        self.convert(name, path, _ifname)
        f = self.fields(raw, path, SWITCH_KEYS)
        if f is None:
            return None
        role = self.get(f, path, "role", _role)
        dpid = self.get(f, path, "dpid", _dpid)
        prefix = self.get(f, path, "prefix", _switch_prefix)
        uplink = self.switch_uplink(name, role, f, path)
        # Given names only, so the model's defaults apply; an invalid one stays None.
        names = {key: self.get(f, path, key, _ifname)
                 for key in ("bridge", "underlay_bridge", "underlay_port") if key in f}
        return Switch(name, role, dpid, prefix, uplink, **names)

    def switch_uplink(self, name: str, role: Optional[str], fields: dict, path: str) -> Optional[Uplink]:
        path = _join(path, "uplink")
        if role == EDGE and "uplink" not in fields:
            self.problem(path, "an edge switch needs an uplink {port, gateway_ip, ip}")
        if role == HOST and "uplink" in fields:
            self.problem(path, "only an edge switch has an uplink")
        f = self.fields(fields["uplink"], path, UPLINK_KEYS) if role == EDGE and "uplink" in fields else None
        if f is None:
            return None
        port = self.get(f, path, "port", _ifname)
        gateway_ip = self.get(f, path, "gateway_ip", _ipv4)
        ip = self.get(f, path, "ip", _ipv4)
        mac = self.get(f, path, "mac", _mac, derived_mac(f"{name}-uplink"))
        if ip is not None and ip == gateway_ip:
            self.problem(_join(path, "ip"), f"{ip} is also the gateway's address")
        return Uplink(port, gateway_ip, ip, mac)

    # Networks, instances, interfaces.

    def network(self, name: str, raw, path: str) -> Optional[Network]:
        f = self.fields(raw, path, NETWORK_KEYS)
        if f is None:
            return None
        netid = self.get(f, path, "id", _network_id)
        entity = self.get(f, path, "entity", _string)
        cidr = self.get(f, path, "cidr", _network_cidr)
        return Network(name, netid, entity, cidr)

    def instance(self, name: str, raw, path: str) -> Optional[Instance]:
        self.convert(name, path, _ifname)
        f = self.fields(raw, path, INSTANCE_KEYS)
        if f is None:
            return None
        switch = self.get(f, path, "switch", self.reference("switches", "switch"))
        port = self.get(f, path, "port", _ifname)
        if switch in self.switches and self.switches[switch].role == EDGE:
            self.problem(_join(path, "switch"), f"{switch} is an {self.switches[switch].role} switch; "
                                                "instances run on host switches")
        return Instance(name, switch, port)

    def interface(self, name: str, raw, path: str) -> Optional[Interface]:
        f = self.fields(raw, path, INTERFACE_KEYS)
        if f is None:
            return None
        network = self.get(f, path, "network", self.reference("networks", "network"))
        before_ips = len(self.problems)
        ips = self.get_list(f, path, "ips", _ipv4)
        if "ips" in f and not ips and len(self.problems) == before_ips:
            self.problem(_join(path, "ips"), "needs at least one address (the first is the primary)")
        return Interface(
            name, network, ips,
            mac=self.get(f, path, "mac", _mac, derived_mac(name)),
            security_groups=self.get_list(f, path, "security_groups",
                                          self.reference("security_groups", "security group")),
            source_dest_check=self.get(f, path, "source_dest_check", _boolean, True),
            attach_to=self.get(f, path, "attach_to", self.reference("instances", "instance")),
            delete_on_terminate=self.get(f, path, "delete_on_terminate", _boolean, False),
            attachers=self.get_list(f, path, "attachers", _string))

    # Security groups and authorizations.

    def security_group(self, name: str, raw, path: str) -> Optional[SecurityGroup]:
        f = self.fields(raw, path, GROUP_KEYS)
        if f is None:
            return None
        ingress, egress = (
            tuple(rule for _, rule in self.build_list(f.get(direction), _join(path, direction),
                                                      functools.partial(self.rule, direction)))
            for direction in ("ingress", "egress"))
        return SecurityGroup(name, ingress, egress)

    def rule(self, direction: str, raw, path: str) -> Optional[Rule]:
        cidr_key, group_key = PEER_KEYS[direction]
        f = self.fields(raw, path, (("proto",), ("ports", cidr_key, group_key)))
        if f is None:
            return None
        proto, ports = self.proto_and_ports(f, path)
        cidr = self.get(f, path, cidr_key, _ipv4_cidr)
        group = self.get(f, path, group_key, self.reference("security_groups", "security group"))
        if (cidr_key in f) == (group_key in f):
            self.problem(path, f"needs exactly one of {cidr_key} and {group_key}")
        return Rule(proto, ports, cidr, group)

    def proto_and_ports(self, fields: dict, path: str):
        proto = self.get(fields, path, "proto", _protocol)
        ports = self.get(fields, path, "ports", _port_range)
        if ports is not None and proto not in PORTED_PROTOCOLS:
            self.problem(_join(path, "ports"), f"ports apply to tcp and udp only, not {proto}")
        return proto, ports

    def authorization(self, raw, path: str) -> Optional[Authorization]:
        f = self.fields(raw, path, AUTHORIZATION_KEYS)
        if f is None:
            return None
        src = self.get(f, path, "from", self.reference("networks", "network"))
        dst = self.get(f, path, "to", self.reference("networks", "network"))
        proto, ports = self.proto_and_ports(f, path)
        if src is not None and src == dst:
            self.problem(_join(path, "to"), f"traffic within network {src} is always allowed; "
                                            "authorizations are between two networks")
        return Authorization(src, dst, proto, ports)

    # NAT and elastic IPs.

    def nat(self, raw):
        """The Nat value (fixed blocks only) and the blocks and forwards with their paths."""
        f = self.fields(raw, "nat", NAT_KEYS) if raw is not None else {}
        if f is None:
            return Nat(), [], []
        blocks = self.build_list(f.get("blocks"), "nat.blocks", self.nat_block)
        forwards = self.build_list(f.get("forwards"), "nat.forwards", self.forward)
        public_ips = self.get_entries(f, "nat", "public_ips", _ipv4)
        self.unique(((ip, path, None) for path, ip in public_ips), lambda ip, _: f"{ip} is listed twice")
        nat = Nat(public_ips=tuple(ip for _, ip in public_ips),
                  reserved_ports=self.get_list(f, "nat", "reserved_ports", _reserved_range),
                  block_bits=self.get(f, "nat", "block_bits", _block_bits, Nat.block_bits),
                  blocks=tuple(b for _, b in blocks), forwards=tuple(w for _, w in forwards))
        return nat, blocks, forwards

    def nat_block(self, raw, path: str) -> Optional[NatBlock]:
        f = self.fields(raw, path, BLOCK_KEYS)
        if f is None:
            return None
        owner = self.get(f, path, "owner", self.block_owner)
        ip = self.get(f, path, "ip", _ipv4)
        ports = self.get(f, path, "ports", _port_range)
        return NatBlock(owner, ip, ports, fixed=True)

    def block_owner(self, value) -> str:
        name = _string(value)
        is_switch = name in self.declared["switches"]
        if is_switch and name in self.declared["interfaces"]:
            raise _Invalid(f"{name!r} names both a switch and an interface")
        if not is_switch and name not in self.declared["interfaces"]:
            raise _Invalid(f"owner {name!r} is neither a switch nor an interface")
        if is_switch and name in self.switches and self.switches[name].role == EDGE:
            raise _Invalid(f"{name!r} is an {self.switches[name].role} switch; "
                           "a block belongs to a host switch or an interface")
        return name

    def forward(self, raw, path: str) -> Optional[Forward]:
        f = self.fields(raw, path, FORWARD_KEYS)
        if f is None:
            return None
        public_ip, public_port = self.get(f, path, "public", _endpoint) or (None, None)
        interface = self.get(f, path, "interface", self.reference("interfaces", "interface"))
        port = self.get(f, path, "port", _port)
        proto = self.get(f, path, "proto", _ported_protocol)
        return Forward(public_ip, public_port, interface, port, proto)

    def elastic_ip(self, raw, path: str) -> Optional[ElasticIp]:
        f = self.fields(raw, path, ELASTIC_IP_KEYS)
        if f is None:
            return None
        ip = self.get(f, path, "ip", _ipv4)
        interface = self.get(f, path, "interface", self.reference("interfaces", "interface"))
        return ElasticIp(ip, interface)


def _version(value) -> int:
    if _integer(value) != VERSION:
        raise _Invalid(f"must be {VERSION}, not {value}")
    return value


# --- Phase 2: checks across items ----------------------------------------------------------------

def _overlaps(ranges: list[tuple[int, int, object]]):
    """For (lo, hi, label) ranges in file order, yield (later, earlier) labels of overlapping pairs.

    A sweep over the ranges sorted by start finds, for each range, one earlier-starting range
    that reaches it; that is enough to report every range that overlaps something.
    """
    order = sorted(range(len(ranges)), key=lambda i: (ranges[i][0], i))
    reach = None  # index of the range reaching furthest so far
    for i in order:
        if reach is not None and ranges[i][0] <= ranges[reach][1]:
            yield (ranges[max(i, reach)][2], ranges[min(i, reach)][2])
        if reach is None or ranges[i][1] > ranges[reach][1]:
            reach = i


class _Checks:
    def __init__(self, loader: _Loader, blocks, forwards, elastic_ips):
        self.loader = loader
        self.problem = loader.problem
        self.unique = loader.unique
        self.blocks = blocks
        self.forwards = forwards
        self.elastic_ips = elastic_ips

    def run(self, nat: Nat) -> None:
        self.switch_ids()
        self.switch_prefixes()
        self.port_names()
        self.network_ids()
        self.interface_addresses()
        self.interface_macs()
        self.nat_blocks(nat)
        self.nat_forwards(nat)
        self.elastic_ip_uses(nat)

    # Switches.

    def switch_ids(self) -> None:
        self.unique(((s.dpid, f"switches.{s.name}.dpid", s.name) for s in self.loader.switches.values()),
                    lambda dpid, other: f"dpid {dpid:#x} is already used by switch {other}")

    def switch_prefixes(self) -> None:
        switches = [s for s in self.loader.switches.values() if s.prefix is not None]
        ranges = [(s.prefix.first, s.prefix.last, s) for s in switches]
        for later, earlier in _overlaps(ranges):
            same = later.prefix == earlier.prefix
            reason = "is already used by" if same else "overlaps the prefix of"
            self.problem(f"switches.{later.name}.prefix",
                         f"prefix {later.prefix} {reason} switch {earlier.name} ({earlier.prefix})")

    def port_names(self) -> None:
        """Bridges and ports of one switch share its Linux interface namespace."""
        seen = {}  # (switch, name) -> what already uses it
        for switch in self.loader.switches.values():
            path = f"switches.{switch.name}"
            # The fixed tunnel port first, so a clash is reported on the field the user wrote.
            own = [("tunnel port", TUNNEL_PORT), ("bridge", switch.bridge),
                   ("underlay_bridge", switch.underlay_bridge), ("underlay_port", switch.underlay_port)]
            if switch.uplink is not None:
                own.append(("uplink.port", switch.uplink.port))
            for key, name in own:
                self.claim_name(seen, switch.name, name, f"{path}.{key}", f"its {key}")
        for inst in self.loader.instances.values():
            path = f"instances.{inst.name}.port"
            self.claim_name(seen, inst.switch, inst.port, path, f"instance {inst.name}")

    def claim_name(self, seen: dict, switch: str, name: str, path: str, user: str) -> None:
        if switch is None or name is None:
            return  # already reported as invalid
        if (switch, name) in seen:
            self.problem(path, f"{name} on switch {switch} is already used by {seen[switch, name]}")
        else:
            seen[switch, name] = user

    # Networks and interfaces.

    def network_ids(self) -> None:
        self.unique(((n.id, f"networks.{n.name}.id", n.name) for n in self.loader.networks.values()),
                    lambda netid, other: f"id {netid} is already used by network {other}")

    def interface_addresses(self) -> None:
        owners = {}  # (network, address) -> path of its first use
        for iface in self.loader.interfaces.values():
            if iface.network is None:
                continue  # already reported as invalid
            network = self.loader.networks.get(iface.network)
            for index, ip in enumerate(iface.ips):
                path = f"interfaces.{iface.name}.ips[{index}]"
                if network is not None and network.cidr is not None:
                    self.address_in_network(ip, network, path)
                key = (iface.network, ip)
                if key in owners:
                    self.problem(path, f"address {ip} is already used in network {iface.network} "
                                       f"by {owners[key]}")
                owners.setdefault(key, path)

    def address_in_network(self, ip: IPAddress, network: Network, path: str) -> None:
        where = f"network {network.name} ({network.cidr})"
        if ip not in network.cidr:
            self.problem(path, f"address {ip} is outside {where}")
        elif ip == network.cidr.network:
            self.problem(path, f"address {ip} is the network address of {where}")
        elif ip == network.cidr.broadcast:
            self.problem(path, f"address {ip} is the broadcast address of {where}")
        elif ip == network.gateway_ip:
            self.problem(path, f"address {ip} is reserved as the gateway of {where}")

    def interface_macs(self) -> None:
        self.unique(((i.mac, f"interfaces.{i.name}.mac", i.name) for i in self.loader.interfaces.values()),
                    lambda mac, other: f"MAC {mac} is already used by interface {other}")

    # NAT and elastic IPs.

    def nat_blocks(self, nat: Nat) -> None:
        blocks = [(p, b) for p, b in self.blocks if b.ip is not None and b.ports is not None]
        for path, block in blocks:
            if block.ip not in nat.public_ips:
                self.problem(f"{path}.ip", f"{block.ip} is not one of nat.public_ips")
            reserved = next((r for r in nat.reserved_ports if r.overlaps(block.ports)), None)
            if reserved is not None:
                self.problem(f"{path}.ports", f"ports {block.ports} include reserved ports {reserved}")
        for ip in {block.ip for _, block in blocks}:
            same_ip = [(b.ports.lo, b.ports.hi, (p, b)) for p, b in blocks if b.ip == ip]
            for (path, block), (other_path, other) in _overlaps(same_ip):
                self.problem(f"{path}.ports",
                             f"ports {block.ports} on {ip} overlap {other_path} ({other.ports})")

    def nat_forwards(self, nat: Nat) -> None:
        for path, fwd in self.forwards:
            if fwd.public_ip is None:
                continue  # already reported as invalid
            if fwd.public_ip not in nat.public_ips:
                self.problem(f"{path}.public", f"{fwd.public_ip} is not one of nat.public_ips")
            inside = next(((p, b) for p, b in self.blocks
                           if b.ip == fwd.public_ip and b.ports and fwd.public_port in b.ports), None)
            if inside is not None:
                block_path, block = inside
                self.problem(f"{path}.public", f"port {fwd.public_port} is inside the NAT block "
                                               f"{block_path} ({block.ports})")
        self.unique((((f.public_ip, f.public_port, f.proto), f"{path}.public", path)
                     for path, f in self.forwards),
                    lambda key, other: f"{key[0]}:{key[1]}/{key[2]} is already forwarded by {other}")

    def nat_pool(self, nat: Nat) -> Nat:
        """Every host switch without a fixed block gets an allocated one (nat_alloc); a pool too
        small for them all is a problem at `nat`. Returns the Nat with every block."""
        if nat.block_bits is None:
            return nat  # already reported as invalid
        valid = dataclasses.replace(
            nat, blocks=tuple(b for _, b in self.blocks if None not in (b.owner, b.ip, b.ports)),
            forwards=tuple(f for _, f in self.forwards if None not in (f.public_ip, f.public_port)))
        hosts = [s.name for s in self.loader.switches.values() if s.role == HOST]
        try:
            return dataclasses.replace(nat, blocks=nat_alloc.allocate_blocks(valid, hosts))
        except nat_alloc.PoolExhausted as error:
            self.problem("nat", str(error))
            return nat

    def elastic_ip_uses(self, nat: Nat) -> None:
        for path, eip in self.elastic_ips:
            if eip.ip is not None and eip.ip in nat.public_ips:
                self.problem(f"{path}.ip", f"{eip.ip} is also a NAT public address")
        self.unique(((e.ip, f"{path}.ip", path) for path, e in self.elastic_ips),
                    lambda ip, other: f"{ip} is already an elastic IP at {other}")
        self.unique(((e.interface, f"{path}.interface", e.ip) for path, e in self.elastic_ips),
                    lambda iface, other: f"interface {iface} already has elastic IP {other}")
