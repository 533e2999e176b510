"""Dataset builders and adapters that write precal manifests."""
