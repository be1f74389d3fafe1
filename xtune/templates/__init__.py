"""Chat template rendering into trained / ignored segments, and export to jinja."""
