"""Built-in trio-broker plugins, each written on the public plugin API."""
