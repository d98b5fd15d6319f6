"""Taps and keystrokes: detection in long multichannel recordings, alignment with a touch log."""

TAP_WINDOW = (2192 / 96000, 6000 / 96000)  # seconds before / after a tap: tap2key's 2192 and 6000 samples at 96 kHz
