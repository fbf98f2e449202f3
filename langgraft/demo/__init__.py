"""`langgraft demo`: the whole recipe on the real sample data in one command (see cli.py)."""
