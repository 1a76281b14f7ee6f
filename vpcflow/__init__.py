"""vpcflow: a deployment file compiled into the OpenFlow tables of every Open vSwitch bridge."""
