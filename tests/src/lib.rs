//! Test support: real OVS sandboxes in network namespaces made by the test.
