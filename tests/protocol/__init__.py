"""Black-box protocol tests (written from PROTOCOL.md alone)."""
