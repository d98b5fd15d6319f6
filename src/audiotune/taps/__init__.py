"""Taps and keystrokes: detection in long multichannel recordings, alignment with a touch log."""
