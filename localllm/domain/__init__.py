"""The words every layer speaks: errors, model names, bounds, and the typed options, messages and events.
Standard library only."""
