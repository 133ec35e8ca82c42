"""The YAML config: frozen models (``model``), cross-field rules, YAML positions."""
