//! The `ovs-ofctl -O OpenFlow13` text syntax for flows and groups: parse and print.
