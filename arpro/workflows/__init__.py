"""What a command does end to end: evaluate, ablate, calibrate, check, train, report, and the
run summaries. Each workflow composes the repair algorithm with run specs and files (``arpro.io``)."""
