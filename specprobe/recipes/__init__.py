"""YAML recipes for a whole model family: the safe loader, its schema, and the bundled recipes."""
