"""Action configuration: the YAML registry of actions, parameter validation and signal-analyzer selection."""
