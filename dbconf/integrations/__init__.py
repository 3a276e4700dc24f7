"""Optional framework integrations. Each submodule imports its framework; this package does not."""
