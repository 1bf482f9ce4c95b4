"""kvstore, the hot-upgrade tutorial's application (see store.py)."""
