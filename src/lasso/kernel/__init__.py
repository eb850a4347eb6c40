"""The pure routing kernel: no IO, no clock, no global randomness."""
