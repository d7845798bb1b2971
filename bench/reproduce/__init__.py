"""`bench reproduce`: documented command sequences that regenerate results end to end (the mini benchmark first)."""
