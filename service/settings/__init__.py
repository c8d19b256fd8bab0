"""Settings: the TOML files beside this module, overridden by the environment, validated once."""
