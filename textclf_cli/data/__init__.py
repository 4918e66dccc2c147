"""Reading, tokenizing, encoding and batching labelled text."""
