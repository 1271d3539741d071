"""Command-line entry points: one module per command a user runs."""
