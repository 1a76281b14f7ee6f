"""vpcflow: a deployment file compiled into the OpenFlow tables of every Open vSwitch bridge."""

import warnings

# os-ken runs on eventlet, which announces its own deprecation on import: noise for our users.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
