"""What the tests and the benchmarks share (the benchmarks import nothing of tests/): the app
harness (a Serve app or its ingress in-process), real local servers (PostgreSQL, SeaweedFS, a
webhook receiver), stub servers that speak each provider's wire format, and the replica-kill
helpers of the fault tests."""
