"""The response cache: backends (memory, Redis), keys, generation tokens, failure tolerance."""
