"""Local stand-ins for external services, speaking their real wire formats (for tests only)."""
