"""Self-attention variants compared on long-range dependency tasks."""
