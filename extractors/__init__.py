"""precal: extractors."""
