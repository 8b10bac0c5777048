"""Small helpers with no model or data knowledge."""
