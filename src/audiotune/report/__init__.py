"""Plots of run directories and the self-contained HTML report; the report's defaults are declared here."""

CLIPS_PER_CLASS = 5  # the most confidently wrong clips shown per head and true class
CLIP_KB = 96  # the largest embedded clip in kB; a longer one is compressed, else linked to its source
