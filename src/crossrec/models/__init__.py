"""Models: the Recommender contract, registry and all registered models."""
