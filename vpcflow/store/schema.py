"""The store's OVSDB schema (etc/vpcflow.ovsschema): its name, version and how rows are keyed.

Every table is a root table and rows name each other by name, as the deployment file does; no
row references another by UUID. That keeps a row's meaning independent of the transaction that
wrote it, lets a re-import of the same file change nothing a reader can see, and leaves the
cross-row checks (references, overlaps, uniqueness across tables) to the loader, which the
reader runs on the store's contents exactly as it runs on a file.

What OVSDB cannot hold directly, and how it is written:
- ordered lists (an interface's addresses: the first is the primary; its security groups;
  the NAT pool's public IPs): a map from position (0, 1, ...) to value;
- lists of items (rules, authorizations, NAT blocks and forwards, elastic IPs): one row per item
  with a `position` column, indexed, so the order of the file survives.
The natural key of each table (below) is what makes a row "the same" across transactions: a
reader reports changes by natural key, never by UUID.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, Tuple

DB_NAME = "vpcflow"
SCHEMA_VERSION = "1.2.0"  # major: readers and writers refuse a server whose major differs
FILE_FORMAT = 1  # the deployment-file `version` the store holds

# The deployment itself; import replaces all of these in one transaction.
INTENT_TABLES = ("Switch", "Network", "Instance", "Interface", "Security_Group", "Rule", "Authorization",
                 "NAT_Pool", "NAT_Block", "NAT_Forward", "Elastic_IP")
# Runtime state the controllers write; an import leaves it alone (its connections live in switches).
RUNTIME_TABLES = ("Remap",)
META_TABLE = "Store"  # one row: the file format, a generation bumped by every write, the last source
ALL_TABLES = (META_TABLE,) + INTENT_TABLES + RUNTIME_TABLES
# The controller instances sharing the switches (1.2.0): one row each, its `beat` bumped every
# half second without bumping the generation. Joins and removals bump it, and set
# Store.membership to it: the OpenFlow role generation id of that membership. The intent reader
# does not replicate this table (beats are not changes of the intent).
MEMBERSHIP_TABLE = "Controller_Instance"

NATURAL_KEYS: Dict[str, Tuple[str, ...]] = {
    "Store": (),
    "Switch": ("name",),
    "Network": ("name",),
    "Instance": ("name",),
    "Interface": ("name",),
    "Security_Group": ("name",),
    "Rule": ("security_group", "direction", "position"),
    "Authorization": ("position",),
    "NAT_Pool": (),
    "NAT_Block": ("position",),
    "NAT_Forward": ("position",),
    "Elastic_IP": ("position",),
    "Remap": ("id",),
    "Controller_Instance": ("name",),
}


def natural_key(table: str, row: dict) -> str:
    """How a row is named in change reports: "eni-web2", "web/ingress[1]", "[0]", "" (singletons)."""
    if table == "Rule":
        return f"{row['security_group']}/{row['direction']}[{row['position']}]"
    columns = NATURAL_KEYS[table]
    if columns == ("position",):
        return f"[{row['position']}]"
    return "/".join(str(row[c]) for c in columns)


def default_schema_path() -> str:
    """etc/vpcflow.ovsschema of this source tree, else the copy an install put under its prefix."""
    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(os.path.dirname(os.path.dirname(here)), "etc", "vpcflow.ovsschema")
    installed = os.path.join(sys.prefix, "share", "vpcflow", "vpcflow.ovsschema")
    return source if os.path.exists(source) or not os.path.exists(installed) else installed


def load_schema_json(path: str = "") -> dict:
    with open(path or default_schema_path(), encoding="utf-8") as f:
        return json.load(f)


def compatible(server_version: str) -> bool:
    """Same major version: minor versions only add optional columns or tables."""
    return server_version.split(".")[0] == SCHEMA_VERSION.split(".")[0]
