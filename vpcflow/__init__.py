"""vpcflow: a deployment file compiled into the OpenFlow tables of every Open vSwitch bridge."""

import warnings

# os-ken runs on eventlet, which announces its own deprecation on import: noise for our users.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
# eventlet imports dnspython, whose DNSSEC module announces that cryptography deprecated DSA
# (cryptography 51 here): not ours to act on, and a line of noise on every command.
warnings.filterwarnings("ignore", message=r"DSA is deprecated", module=r"dns\.")
