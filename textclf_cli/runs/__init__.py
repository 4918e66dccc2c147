"""Run folders: their names, status and links, listing and pruning, and the checkpoint format."""
