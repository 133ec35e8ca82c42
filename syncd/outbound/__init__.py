"""Mail that goes out: the relay to the smarthost (extra_bcc copies); for tracking, the
signed URL tokens (tokens.py) and the verdict on each open and click (verdicts.py), both
pure."""
