"""Model families: one module per family, the table of families (families.py) and the builder (build.py)."""
