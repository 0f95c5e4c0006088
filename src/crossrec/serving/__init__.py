"""Serving: artifacts (safetensors + JSON), and later the index, service and API."""
