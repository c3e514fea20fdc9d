"""What the tools around the model share: dtype names, atomic file writes, optional dependencies.

Nothing here is remote code (that is the package's root) and nothing here imports the layers above it.
"""
