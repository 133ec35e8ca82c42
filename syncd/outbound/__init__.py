"""Mail that goes out: the relay to the smarthost (extra_bcc copies)."""
