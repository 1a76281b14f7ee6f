"""The deployment intent in an OVSDB database of vpcflow's own (etc/vpcflow.ovsschema),
standalone or clustered (Raft), read and written through the `ovs` Python IDL.

- schema.py: the database's name, version, tables and each table's natural key;
- rows.py: Deployment <-> rows, pure;
- client.py: connections, values on the wire, StoreWriter (every write one transaction);
- reader.py: StoreReader, the current Deployment and the changes since the last read;
- transfer.py: import and export of deployment files.
"""
from vpcflow.store.client import StoreConflict, StoreError, StoreWriter
from vpcflow.store.reader import Change, StoreReader, Update
from vpcflow.store.transfer import (export_deployment, export_text, import_deployment, read_deployment,
                                    write_deployment)

__all__ = ["Change", "StoreConflict", "StoreError", "StoreReader", "StoreWriter", "Update", "export_deployment", "export_text",
           "import_deployment", "read_deployment", "write_deployment"]
