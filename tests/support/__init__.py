"""Test helpers: the ingress app in-process, request bodies and specs, stand-ins for backends and the
Generator, a static HTTP server, and Prometheus scrapes (what benchmarks share too is in testbed/)."""
