"""Input pipelines (grain) and data sources. Nothing in this package imports JAX."""
