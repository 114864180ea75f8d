"""Configuration: Hydra composition into typed settings, validated once.

- `rules`: field ranges (`at_least`, `between`, `one_of`) and the one checker every command's
  settings go through (`typed`, `check`).
- `schema`: the search's settings (`Settings` and its groups), registered as Hydra's schema.
- `compose`: `load_settings(overrides)` and `compose_config(overrides)`, for every command.

This package's root imports nothing heavy: `nas.hardware` and the plugins import `rules` from it.
"""
