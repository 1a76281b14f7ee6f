"""The pure compiler: deployment model in, Flow values out. No sockets, no os-ken."""
