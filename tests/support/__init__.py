"""Test helpers: a SeaweedFS S3 server, a webhook receiver and a static HTTP server, all on 127.0.0.1."""
