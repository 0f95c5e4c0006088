"""Serving: artifacts (safetensors + JSON), the item index, the service, its store and the HTTP API."""
