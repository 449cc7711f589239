"""The relay is the data plane: it has no models of its own (Midjourney tasks will live in
the jobs app with their relay)."""
