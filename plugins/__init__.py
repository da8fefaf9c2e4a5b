"""lpb's built-in plugins. Each module is registered through the ``lpb`` entry-point group,
exactly as a third-party plugin package would be (see pyproject.toml)."""
