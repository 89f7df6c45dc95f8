"""The HTTP API: routes parse, call one service function, and format."""
