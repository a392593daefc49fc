//! Helpers for the integration tests: network namespaces, veth pairs, traffic generators.
