"""precal: storage."""
