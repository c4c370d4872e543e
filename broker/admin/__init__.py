"""The admin listener: health, metrics, the HTTP publish API, the demo pages."""
